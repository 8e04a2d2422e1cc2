"""Worker processes that end with the scan that started them.

A scan killed outright (SIGKILL from an out-of-memory killer or a job scheduler) cannot stop
its DataLoader workers; they would live on, each holding a model and decoded images, blocked
for ever on a queue whose reader is gone. Each worker therefore asks the kernel to kill it when
its parent dies (Linux: prctl PR_SET_PDEATHSIG), and a watchdog thread checks the parent every
second wherever that is not available."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CHECK_SECONDS = 1.0


def die_with_parent(parent_pid: int, interval: float = CHECK_SECONDS) -> None:
    """Ends this process as soon as `parent_pid` (its parent when it was started) is gone."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError):  # no libc to load: the watchdog alone
            pass
    if os.getppid() != parent_pid:  # the parent died before the request was made
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid, interval), daemon=True,
                     name="forgeryloc-parent-watch").start()


def _watch(parent_pid: int, interval: float) -> None:
    while True:
        time.sleep(interval)
        if os.getppid() != parent_pid:  # re-parented: the scan is gone
            os._exit(1)  # no clean-up that could block; temporaries go on --resume


def worker_init(parent_pid: int, worker_id: int) -> None:
    """DataLoader worker_init_fn (bind parent_pid with functools.partial in the parent)."""
    die_with_parent(parent_pid)
