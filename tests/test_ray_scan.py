"""`forgeryloc scan --ray`: a scan on Ray Data gives what a local scan gives, byte for byte.

One local Ray instance (2 CPUs, loopback only) serves the module; the scans reach it with
`--ray local`, which reuses the instance this process is already connected to. Ray's CPU
actors run one thread each, and CPU results are exact only for a given thread count, so the
local scans they are compared with run with one thread too."""
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from forgeryloc.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from make_corpus import make_corpus, photo  # noqa: E402

REPORTS = {"report.json", "report.html"}  # these hold the run (times, command line, Ray)


def scan(*args):
    return CliRunner().invoke(app, ["scan", *map(str, args)])


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def journal(out: Path) -> list[str]:
    return (out / "journal.jsonl").read_text(encoding="utf-8").splitlines()


def files(out: Path) -> dict[str, bytes]:
    found = {}
    for current, _, names in os.walk(out):
        for name in names:
            path = Path(current, name)
            found[path.relative_to(out).as_posix()] = path.read_bytes()
    return found


def skipped(result) -> set[str]:
    return {line for line in result.stderr.splitlines() if line.startswith("skipped ")}


def assert_same_outputs(local: Path, ray: Path) -> None:
    """Same records, journal lines (in any order), CSV and pictures."""
    assert report(ray)["images"] == report(local)["images"]
    lines, ray_lines = journal(local), journal(ray)
    assert ray_lines[0] == lines[0]
    assert sorted(ray_lines[1:]) == sorted(lines[1:])
    ours, theirs = files(local), files(ray)
    assert sorted(theirs) == sorted(ours)
    # The checksum list hashes the reports too, whose run sections differ (device, Ray info).
    derived = REPORTS | {"journal.jsonl", "manifest.sha256"}
    different = [name for name in ours if name not in derived and ours[name] != theirs[name]]
    assert not different


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'forgeryloc[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 _node_ip_address="127.0.0.1")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scans(ray_instance, one_thread, tmp_path_factory, tiny_checkpoint):
    """The bad-input corpus, scanned locally and on Ray."""
    root = tmp_path_factory.mktemp("ray")
    inputs = root / "inputs"
    make_corpus(inputs)
    common = ["--weights", tiny_checkpoint, "--batch-size", "4"]
    local = scan(inputs, "-o", root / "local", *common, "--workers", "0")
    ray = scan(inputs, "-o", root / "ray", *common, "--ray", "local")
    return SimpleNamespace(root=root, inputs=inputs, common=common, local=local, ray=ray)


def test_a_ray_scan_equals_a_local_scan(scans):
    assert scans.ray.exit_code == scans.local.exit_code == 3, scans.ray.output
    assert "Traceback" not in scans.ray.output
    assert_same_outputs(scans.root / "local", scans.root / "ray")
    run = report(scans.root / "ray")["run"]
    assert run["device"] == "cpu" and run["cpu_threads"] == 1
    assert run["ray"]["address"] == "local" and run["ray"]["actors"] == 1
    assert run["counts"] == report(scans.root / "local")["run"]["counts"]


def test_bad_files_are_reported_as_locally(scans):
    assert skipped(scans.ray) == skipped(scans.local)
    records = report(scans.root / "ray")["images"]
    errors = [r for r in records if r["error"]]
    assert len(errors) >= 10 and all(r["score"] is None and r["outputs"] is None
                                      for r in errors)
    names = {r["relative_path"] for r in records}
    assert os.fsdecode(b"not-utf8-\xff\xfe.png") in names and "new\nline.png" in names


def test_resume_through_ray_skips_finished_images_as_locally(scans):
    """Both scans resume into copies of their output, after one image was added: Ray
    journals what the local scan journals (the new image, and the unreadable ones again)."""
    added = scans.inputs / "zz-added.png"
    Image.fromarray(photo(30, 40, 99)).save(added)
    outs = {}
    try:
        for name, options in (("local", ["--workers", "0"]), ("ray", ["--ray", "local"])):
            out = scans.root / f"{name}-resumed"
            shutil.copytree(scans.root / name, out)
            before = len(journal(out))
            result = scan(scans.inputs, "-o", out, *scans.common, *options, "--resume")
            assert result.exit_code == 3, result.output
            new = [json.loads(line) for line in journal(out)[before:]]
            outs[name] = (out, sorted(json.dumps(r, sort_keys=True) for r in new))
    finally:
        added.unlink()
    (local, local_new), (ray, ray_new) = outs["local"], outs["ray"]
    assert ray_new == local_new
    fresh = {json.loads(line)["relative_path"] for line in ray_new
             if json.loads(line)["error"] is None}
    assert fresh == {"zz-added.png"}, "finished images are not done again"
    assert_same_outputs(local, ray)
    assert len(report(ray)["images"]) == len(report(scans.root / "ray")["images"]) + 1


def test_a_cluster_too_small_for_the_actors_is_a_usage_error(scans, tiny_checkpoint, tmp_path):
    result = scan(scans.inputs, "-o", tmp_path / "out", "--weights", tiny_checkpoint,
                  "--ray", "local", "--ray-actors", "2")
    assert result.exit_code == 2
    assert "needs 3 CPUs" in result.stderr and "Traceback" not in result.output


def test_an_actor_that_finds_other_weights_stops_the_scan_in_one_line(scans, tiny_checkpoint,
                                                                       tmp_path):
    from forgeryloc.discover import discover_inputs
    from forgeryloc.ray_scan import RayScanError, run_ray_scan
    from forgeryloc.scan import ScanSettings
    from forgeryloc.weights import load_model

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo(20, 24, 1)).save(folder / "a.png")
    card = load_model(tiny_checkpoint)[1]
    with pytest.raises(RayScanError, match="not the file the scan was started with"):
        run_ray_scan(discover_inputs([str(folder)]), tmp_path / "out", tiny_checkpoint,
                     "0" * 64, card, ScanSettings(), {"header": 1}, address="local")
    assert journal(tmp_path / "out") == ['{"journal": {"header": 1}}']


@pytest.mark.parametrize("device, actors, resources, expect", [
    ("auto", 2, {"CPU": 8, "GPU": 2}, True),
    ("auto", 1, {"CPU": 8}, False),
    ("cpu", 1, {"CPU": 8, "GPU": 2}, False),
    ("auto", 3, {"CPU": 8, "GPU": 2}, "needs 3 GPUs"),
    ("cuda", 1, {"CPU": 8}, "has no GPU"),
    ("auto", 8, {"CPU": 8}, "needs 9 CPUs"),
])
def test_gpu_actors_when_the_cluster_has_gpus(device, actors, resources, expect):
    from forgeryloc.ray_scan import RayScanError, _plan

    cluster = SimpleNamespace(cluster_resources=lambda: resources)
    if isinstance(expect, bool):
        assert _plan(cluster, device, actors) is expect
    else:
        with pytest.raises(RayScanError, match=expect):
            _plan(cluster, device, actors)


def test_without_ray_installed_ray_is_a_one_line_usage_error(monkeypatch, tmp_path,
                                                            tiny_checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result = scan(folder, "-o", tmp_path / "out", "--weights", tiny_checkpoint, "--ray", "auto")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'forgeryloc[ray]'" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()
