"""Smoke tests of the benchmark harness (benchmarks/): it runs and its JSON holds every number.
Nothing here asserts a speed; `--quick` keeps the whole run to seconds."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def benchmarks(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ is not installed with the package
    import benchmarks
    return benchmarks


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_quick_run_writes_every_number(benchmarks, tmp_path):
    output = tmp_path / "results.json"
    assert benchmarks.main(["all", "--quick", "--output", str(output)]) == 0
    doc = json.loads(output.read_text())

    assert doc["quick"] is True and doc["failed_sections"] == []
    assert doc["sections"] == ["forward", "scan", "memory", "gpu"]
    assert doc["date"] and doc["finished"]
    machine = doc["machine"]
    for key in ("cpu_model", "torch", "device", "python"):
        assert machine[key]
    assert machine["threads"] == 1  # --quick runs single-threaded
    assert _positive(machine["threads_default"]) and _positive(machine["logical_cpus"])

    forward = doc["forward"]
    assert _positive(forward["matmul_peak_gflops"])
    assert forward["matmul_peak_gflops"] == max(forward["matmul_peak_before"]["gflops"],
                                                forward["matmul_peak_after"]["gflops"])
    assert [(r["config"], r["size"], r["batch"]) for r in forward["results"]] == [
        ("m2sformer-b0", 64, 1), ("m2sformer-b0", 64, 2)]
    for row in forward["results"]:
        for key in ("images_per_s", "images_per_s_mean", "ms_per_batch", "ms_per_batch_mean",
                    "gmacs_per_image", "gflops", "pct_of_matmul_peak", "parameters",
                    "local_matmul_peak_gflops", "pct_of_local_matmul_peak"):
            assert _positive(row[key]), key
        assert row["ms_per_batch_std"] >= 0
        assert row["pct_of_local_matmul_peak"] == pytest.approx(
            100 * row["gflops"] / row["local_matmul_peak_gflops"])
        timing = row["timing"]
        assert len(timing["samples_s"]) == timing["repeats"] >= 2
        assert timing["min_s"] <= timing["median_s"] <= timing["max_s"]

    scan = doc["scan"]
    assert scan["images"] == 4 and scan["report_counts"]["scanned"] == 4
    assert scan["command"][:3] == ["-m", "forgeryloc", "scan"]
    for key in ("scan_wall_s", "scan_images_per_s", "forward_images_per_s",
                "ratio_scan_to_forward", "input_mib"):
        assert _positive(scan[key]), key
    for key in ("python_imports_s", "model_load_s", "total_s"):
        assert _positive(scan["startup"][key]), key
    forward = scan["forward"]
    assert forward["forward_s"] == pytest.approx(
        (forward["before"]["forward_s"] + forward["after"]["forward_s"]) / 2)
    assert scan["forward_images_per_s"] == pytest.approx(4 / forward["forward_s"])

    memory = doc["memory"]
    assert _positive(memory["baseline"]["peak_rss_mib"])
    assert [(c["width"], c["height"], c["mode"]) for c in memory["cases"]] == [
        (160, 120, "resize"), (160, 120, "tile")]
    for case in memory["cases"]:
        assert _positive(case["peak_rss_mib"]) and _positive(case["decoded_mib"])
        assert case["decoded_bytes"] == 160 * 120 * 3
        assert _positive(case["wall_s"])
        # the child's own high-water mark, not the harness's inherited one
        assert case["peak_rss_mib"] < 4096
    assert memory["cases"][1]["tiles"] > 1

    gpu = doc["gpu"]
    if "skipped" in gpu:
        assert "CUDA" in gpu["skipped"]
    else:
        assert all(_positive(r["images_per_s"]) and _positive(r["peak_allocated_mib"])
                   for r in gpu["results"] if "skipped" not in r)


def test_sections_and_options_parse(benchmarks):
    from benchmarks.cli import build_parser, make_settings, resolve_sections

    assert resolve_sections([]) == ["forward", "scan", "memory", "gpu"]
    assert resolve_sections(["memory", "forward"]) == ["forward", "memory"]
    with pytest.raises(SystemExit):
        resolve_sections(["nope"])
    args = build_parser().parse_args(["scan", "--quick", "--configs", "b1,m2sformer-b2",
                                      "--image-size", "640x480", "--memory-sizes",
                                      "8000x6000", "--threads", "3"])
    settings = make_settings(args)
    assert settings.quick and settings.threads == 3  # explicit options beat --quick
    assert settings.configs == ["m2sformer-b1", "m2sformer-b2"]
    assert (settings.image_width, settings.image_height) == (640, 480)
    assert settings.memory_shapes == [(6000, 8000)]
    full = make_settings(build_parser().parse_args([]))
    assert full.sizes == [256, 512] and full.batch_sizes == [1, 8] and full.images == 200
    assert full.memory_config == full.config == "m2sformer-b2"


def test_time_step_statistics(benchmarks):
    from benchmarks.timing import time_step

    calls = []
    timing = time_step(lambda: calls.append(1), warmup=2, repeats=3, min_time_s=0.0)
    assert len(calls) == 2 + 1 + 3 and timing.iterations == 1 and timing.repeats == 3
    assert timing.min_s <= timing.median_s <= timing.max_s and timing.std_s >= 0


def test_synthetic_images_are_deterministic(benchmarks):
    from benchmarks.synthetic import synthetic_rgb

    first = synthetic_rgb(48, 64, seed=3)
    assert first.shape == (48, 64, 3) and first.dtype.name == "uint8"
    assert (first == synthetic_rgb(48, 64, seed=3)).all()
    assert (first != synthetic_rgb(48, 64, seed=4)).any()
    assert first.std() > 10  # not a flat picture


def test_command_line_entry(tmp_path):
    import subprocess

    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--quick" in result.stdout
