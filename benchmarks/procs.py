"""Child processes with exact timing and memory accounting.

A child is started with posix_spawn in a process group of its own and reaped with wait4 (its
CPU times). While it runs, the group can be sampled every `poll_s` for the summed proportional
set size (PSS) of the whole tree, which also counts DataLoader workers.

ru_maxrss is deliberately not used: a child spawned (or forked) from this harness starts with
the harness's own high-water mark folded into its ru_maxrss at exec, so a small child reports
the harness's size. The memory benchmark has the child read its own VmHWM instead.
"""
from __future__ import annotations

import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildFailed(RuntimeError):
    """A benchmarked command did not exit with 0 (or ran past its timeout)."""


@dataclass
class ChildResult:
    argv: list[str]
    returncode: int
    wall_s: float                   # from spawn to reap
    tree_peak_pss_mib: float | None  # largest sampled sum of PSS over the process group
    samples: int
    user_s: float
    system_s: float
    stdout: str
    stderr: str


def child_env(threads: int | None) -> dict[str, str]:
    """The harness's environment, with explicit thread counts and this checkout importable."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    parts = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _group_members(pgid: int) -> list[int]:
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # fields after the parenthesised command: state ppid pgrp ...
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 2 and int(rest[2]) == pgid:
            members.append(int(name))
    return members


def _memory_kib(pid: int) -> int:
    """PSS of one process in KiB (VmRSS where smaps_rollup is unavailable); 0 once it is gone."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", b"Pss:"), (f"/proc/{pid}/status", b"VmRSS:")):
        try:
            with open(path, "rb") as handle:
                for line in handle:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def group_memory_mib(pgid: int) -> float:
    return sum(_memory_kib(pid) for pid in _group_members(pgid)) / 1024.0


def run_child(argv: list[str], log_dir: Path, *, env: dict[str, str] | None = None,
              timeout_s: float | None = None, poll_s: float = 0.05, sample_tree: bool = True,
              check: bool = True) -> ChildResult:
    """Runs argv (argv[0] an absolute path) to completion; stdout and stderr go to files in
    log_dir (never a pipe that could fill up). The clock runs from just before the spawn to
    just after the reap."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"child-{time.monotonic_ns()}"
    out_path, err_path = log_dir / f"{stem}.out", log_dir / f"{stem}.err"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, str(out_path), flags, 0o644),
               (os.POSIX_SPAWN_OPEN, 2, str(err_path), flags, 0o644)]
    peak = 0.0
    samples = 0
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, env if env is not None else os.environ,
                         file_actions=actions, setpgroup=0)
    try:
        exited = os.pidfd_open(pid)  # readable once the child exits: no sleep-granularity error
    except (AttributeError, OSError):
        exited = None
    try:
        while True:
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped:
                break
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                os.killpg(pid, signal.SIGKILL)  # our own child's group only
                reaped, status, usage = os.wait4(pid, 0)
                wall = time.perf_counter() - start
                raise ChildFailed(f"{' '.join(argv)} ran past {timeout_s:g} s (killed after "
                                  f"{wall:.1f} s)")
            if sample_tree:
                peak = max(peak, group_memory_mib(pid))
                samples += 1
            if exited is not None:
                select.select([exited], [], [], poll_s)
            else:
                time.sleep(poll_s)
    except BaseException:
        try:  # never leave our child running (e.g. on Ctrl-C)
            os.killpg(pid, signal.SIGKILL)
            os.wait4(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        raise
    finally:
        if exited is not None:
            os.close(exited)
    wall = time.perf_counter() - start
    _reap_leftovers(pid)
    result = ChildResult(argv=list(argv), returncode=os.waitstatus_to_exitcode(status),
                         wall_s=wall,
                         tree_peak_pss_mib=peak if samples else None, samples=samples,
                         user_s=usage.ru_utime, system_s=usage.ru_stime,
                         stdout=out_path.read_text(errors="replace"),
                         stderr=err_path.read_text(errors="replace"))
    if check and result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise ChildFailed(f"{' '.join(argv)} exited with {result.returncode}:\n{tail}")
    return result


def _reap_leftovers(pgid: int) -> None:
    """Grandchildren of ours that outlived their parent (should not happen) are stopped."""
    for pid in _group_members(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
