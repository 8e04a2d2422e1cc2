"""`forgeryloc scan --ray ADDRESS`: the same scan on a Ray cluster, with Ray Data.

This process (the driver) finds the inputs, reads the journal of a resumed scan and keeps the
records, as a local scan does. The inputs are partitioned into blocks; Ray tasks on CPU
workers decode them with scan.load_item; a pool of actors, each holding one model (and one GPU
when the cluster has GPUs), predicts, writes the output pictures into the shared output folder
with scan.image_outcome and sends back each image's outcome; the driver journals the records as
they stream back and writes the reports at the end, in input order, as a local scan does.

Every node must see the inputs, the output folder and the weights at the same paths, and run
the same forgeryloc. Ray is imported only here, and only when --ray is used: it is the
optional extra `forgeryloc[ray]`."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import re
import socket
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .discover import InputEntry
from .imaging import one_line
from .scan import OutputError, ScanLedger, ScanResult, ScanSettings, item_outcomes, load_item
from .weights import CheckpointError, CheckpointInfo

INSTALL_HINT = "pip install 'forgeryloc[ray]'"
LOCAL = "local"                  # --ray local: start a Ray instance in this process
DEVICES = ("auto", "cpu", "cuda")
BATCHES_PER_BLOCK = 2            # a block of inputs holds this many inference batches
MAX_BLOCKS = 10_000


class RayScanError(ValueError):
    """The Ray cluster cannot run this scan; the message is one line for the user."""


def ray_unavailable() -> str | None:
    """Why --ray cannot be used here (Ray Data is not installed), or None."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return f"--ray needs Ray Data, which is not installed: {INSTALL_HINT}"
    return None


# ---- what travels between the stages ------------------------------------------------------
# Rows are {"index": input position, "entry": JSON of the entry, ...}. JSON keeps any file name
# (a name that is not UTF-8 is a str with lone surrogates, written as \udcxx escapes), so the
# columns stay plain ASCII strings for Arrow.

def _entry_json(entry: InputEntry, done_sha256: list[str]) -> str:
    return json.dumps([entry.path, entry.relative_path, entry.error, done_sha256])


def _entry_from_json(text: str) -> tuple[InputEntry, set[tuple[str, str]]]:
    """The entry, and the (relative path, sha256) pairs of it that the journal has."""
    path, relative_path, error, done_sha256 = json.loads(text)
    return (InputEntry(path=path, relative_path=relative_path, error=error),
            {(relative_path, sha256) for sha256 in done_sha256})


def _install_problem(version: str) -> str | None:
    if version == __version__:
        return None
    return (f"node {socket.gethostname()} runs forgeryloc {__version__}, the driver {version}: "
            f"install the same version on every node")


# A worker that cannot go on says so in its rows instead of raising, so that the driver can
# report it in one line (an exception reaches the driver wrapped in Ray's, its cause lost):
# such a row's outcome is {"failure": message, "output": true when writing OUTDIR failed}.

def _decode(batch: dict, settings: ScanSettings, size: int, mean, std, version: str) -> dict:
    """Ray task: decodes a block of inputs (each item pickled, arrays and all)."""
    problem = _install_problem(version)
    items = []
    for text in batch["entry"]:
        if problem:
            item = {"failure": problem}
        else:
            entry, done = _entry_from_json(text)
            item = load_item(entry, settings, size, mean, std, done)
        items.append(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
    return {"index": batch["index"], "entry": batch["entry"],
            "item": np.array(items, dtype=object)}


class _Predict:
    """Ray actor: one model, loaded once from its path; predicts batches of decoded items and
    writes their outputs. Each row it returns holds an image's outcome as JSON (see
    scan.item_outcomes, and failures above), and the device and CPU threads that made it."""

    def __init__(self, weights: str, weights_sha256: str, out: str, settings: ScanSettings,
                 version: str, use_gpu: bool):
        self.out, self.settings = Path(out), settings
        self.device, self.threads, self.failure = "none", 0, _install_problem(version)
        if self.failure is None:
            try:
                self._load(weights, weights_sha256, use_gpu)
            except (CheckpointError, RayScanError) as error:
                self.failure = str(error)

    def _load(self, weights: str, weights_sha256: str, use_gpu: bool) -> None:
        import ray
        import torch

        from .predict import Predictor
        from .weights import load_model, sha256_file

        node = socket.gethostname()
        try:
            found = sha256_file(weights)
        except OSError as error:
            raise CheckpointError(f"{weights}: cannot be read on node {node} "
                                  f"({error.strerror or error}); every node needs the weights "
                                  f"at the same path") from None
        if found != weights_sha256:
            raise CheckpointError(f"{weights} on node {node} is not the file the scan was "
                                  f"started with (SHA-256 {found[:12]}…, expected "
                                  f"{weights_sha256[:12]}…)")
        if use_gpu and not torch.cuda.is_available():
            raise RayScanError(f"node {node} was given a GPU, but its torch {torch.__version__} "
                               f"cannot use CUDA: install a CUDA build there, or scan with "
                               f"--device cpu")
        # CPU results are exact for a given thread count: use exactly the CPUs Ray gave us.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.threads = max(1, int(cpus))
        torch.set_num_threads(self.threads)
        model, card = load_model(weights)
        self.predictor = Predictor(model, card, "cuda" if use_gpu else "cpu",
                                   mixed_precision=self.settings.mixed_precision,
                                   compile_model=self.settings.compile)
        self.device = str(self.predictor.device)

    def __call__(self, batch: dict) -> dict:
        entries, items = {}, []
        for index, text, blob in zip(batch["index"], batch["entry"], batch["item"]):
            index = int(index)
            entries[index] = _entry_from_json(text)[0]
            items.append(dict(pickle.loads(blob), index=index))
        failure = self.failure or next((i["failure"] for i in items if "failure" in i), None)
        indices, outcomes = [], []
        if failure:
            indices.append(-1)
            outcomes.append({"failure": failure, "output": False})
        else:
            try:
                for index, make_outcome in item_outcomes(items, entries.__getitem__,
                                                         self.predictor, self.settings,
                                                         self.out):
                    outcome = make_outcome()
                    indices.append(index)
                    outcomes.append(outcome)
            except OutputError as error:  # what is done so far is kept
                indices.append(-1)
                outcomes.append({"failure": str(error), "output": True})
        count = len(indices)
        return {"index": np.array(indices, dtype=np.int64),
                "outcome": np.array([json.dumps(o) for o in outcomes], dtype=object),
                "device": np.array([self.device] * count, dtype=object),
                "threads": np.full(count, self.threads, dtype=np.int64)}


# ---- the driver ---------------------------------------------------------------------------
def _connect(ray, address: str) -> bool:
    """Connects (or starts a local instance); False when this process already was connected
    (a program that embeds forgeryloc, or a test), which is then left connected.

    Ray's own messages are errors only, unless forgeryloc runs with --verbose."""
    if ray.is_initialized():
        return False
    import ray.data  # it sets up its logger when first imported

    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    level = logging.INFO if verbose else logging.ERROR
    logging.getLogger("ray.data").setLevel(level)
    try:
        if address == LOCAL:
            # Private to this machine: the instance listens on the loopback interface only.
            ray.init(address="local", include_dashboard=False, logging_level=level,
                     _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, logging_level=level)
    except Exception as error:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError, ...
        raise RayScanError(f"cannot connect to the Ray cluster at {address!r}: "
                           f"{_first_line(error)}") from None
    return True


def _plan(ray, device: str, actors: int) -> bool:
    """Checks that the cluster can hold the actor pool; True for GPU actors."""
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    use_gpu = device != "cpu" and gpus >= 1
    if device == "cuda" and not use_gpu:
        raise RayScanError("--device cuda was asked for but the Ray cluster has no GPU")
    if use_gpu and actors > gpus:
        raise RayScanError(f"--ray-actors {actors} needs {actors} GPUs (one model on each); "
                           f"the Ray cluster has {gpus:g}")
    if actors + 1 > cpus:
        raise RayScanError(f"--ray-actors {actors} needs {actors + 1} CPUs (one per actor, and "
                           f"at least one to decode); the Ray cluster has {cpus:g}")
    return use_gpu


def _from_items(ray, rows: list[dict], blocks: int):
    try:
        return ray.data.from_items(rows, override_num_blocks=blocks)
    except TypeError:  # Ray before 2.10 names it parallelism
        return ray.data.from_items(rows, parallelism=blocks)


def _pipeline(ray, entries: list[InputEntry], done: set[tuple[str, str]], out: Path,
              weights: Path, weights_sha256: str, card: CheckpointInfo, settings: ScanSettings,
              actors: int, use_gpu: bool):
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the scan shows its own
    done_sha256: dict[str, list[str]] = {}
    for relative_path, sha256 in sorted(done):
        done_sha256.setdefault(relative_path, []).append(sha256)
    rows = [{"index": index, "entry": _entry_json(entry, done_sha256.get(entry.relative_path, []))}
            for index, entry in enumerate(entries)]
    batch_size = 1 if settings.mode == "tile" else settings.batch_size
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(rows) / (BATCHES_PER_BLOCK * batch_size))))
    # max_calls=0 is Ray's default for CPU tasks (a worker process is reused without limit).
    # Stating it gives the decoding remote arguments other than the actors', and Ray Data
    # fuses only stages whose remote arguments are the same: without it, CPU actors would
    # decode their own inputs, one after the other, instead of tasks decoding alongside.
    decoded = _from_items(ray, rows, blocks).map_batches(
        _decode, batch_size=None, batch_format="numpy", num_cpus=1, max_calls=0,
        fn_kwargs={"settings": settings, "size": card.input_size, "mean": card.mean,
                   "std": card.std, "version": __version__})
    return decoded.map_batches(
        _Predict, batch_size=batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
        num_gpus=1 if use_gpu else 0,
        fn_constructor_kwargs={"weights": str(weights), "weights_sha256": weights_sha256,
                               "out": str(out), "settings": settings, "version": __version__,
                               "use_gpu": use_gpu})


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return one_line((lines[0] if lines else type(error).__name__)[:300])


_RAISED = re.compile(r"(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception)): (.+)")


def _explain(error: BaseException) -> RayScanError:
    """An unexpected failure of a worker or of the cluster, in one line. Ray passes a worker's
    exception on as text: the first "SomeError: message" line in it is the original."""
    for line in str(error).splitlines():
        match = _RAISED.fullmatch(line.strip())
        if match:
            reason = f"{match[1]}: {match[2]}"
            break
    else:
        reason = f"{type(error).__name__}: {_first_line(error)}"
    return RayScanError(f"the Ray scan failed ({one_line(reason[:300])}); finished images are "
                        f"kept: rerun with --resume to finish the rest")


def run_ray_scan(entries: list[InputEntry], out_dir: str | Path, weights: str | Path,
                 weights_sha256: str, card: CheckpointInfo, settings: ScanSettings,
                 journal_header: dict, *, address: str, actors: int = 1, device: str = "auto",
                 resume: bool = False, on_record: Callable[[dict], None] | None = None
                 ) -> tuple[ScanResult, dict]:
    """run_scan on a Ray cluster: the same records, in input order, and the same journal.

    Also returns what the run report says of the workers: device, cpu_threads and ray."""
    import ray

    if device not in DEVICES:
        raise RayScanError(f"--device {device} cannot be used with --ray (auto, cpu or cuda)")
    if actors < 1:
        raise RayScanError("--ray-actors must be at least 1")
    # Workers have other working folders: every path they get is absolute.
    out, weights = Path(os.path.abspath(out_dir)), Path(os.path.abspath(weights))
    connected_here = _connect(ray, address)
    try:
        use_gpu = _plan(ray, device, actors)
    except BaseException:
        if connected_here:
            ray.shutdown()
        raise
    # bf16 autocast runs on GPU actors only: the journal records what will be used, as a
    # local scan's does (so either can resume the other).
    settings = dataclasses.replace(settings,
                                   mixed_precision=settings.mixed_precision and use_gpu)
    if "settings" in journal_header:
        journal_header = {**journal_header, "settings": settings.fingerprint()}
    ledger = ScanLedger(entries, out, journal_header, resume, on_record)
    workers: set[tuple[str, int]] = set()
    try:
        try:
            outcomes = _pipeline(ray, entries, ledger.done, out, weights, weights_sha256, card,
                                 settings, actors, use_gpu)
            for row in outcomes.iter_rows():  # as they finish, in any order
                outcome = json.loads(row["outcome"])
                if "failure" in outcome:
                    raise (OutputError if outcome["output"] else RayScanError)(
                        outcome["failure"])
                ledger.accept(int(row["index"]), outcome)
                workers.add((str(row["device"]), int(row["threads"])))
            nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        except (OutputError, RayScanError, KeyboardInterrupt):
            raise
        except Exception as error:  # noqa: BLE001 - whatever a worker or the cluster raised
            raise _explain(error) from None
        finally:
            if connected_here:
                ray.shutdown()
    finally:
        ledger.close()
    if ledger.missing():
        raise RayScanError(f"{ledger.missing()} images did not come back from the Ray cluster; "
                           f"rerun with --resume to finish them")
    devices = sorted({device for device, _ in workers})
    threads = sorted({count for _, count in workers})
    info = {"device": devices[0] if len(devices) == 1 else devices,
            "cpu_threads": threads[0] if len(threads) == 1 else threads,
            "ray": {"address": address, "version": ray.__version__, "nodes": nodes,
                    "actors": actors, "actor_gpus": 1 if use_gpu else 0}}
    return ledger.result(), info
