"""CPU allocator tuning for large activations."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_tuned = False


def keep_large_allocations() -> bool:
    """Lets glibc serve large tensors from its heap instead of a fresh mmap each time.

    Activations of tens of MB are allocated and freed at every layer; by default each one is a
    new mapping whose pages fault in again, which measured ~30% of an M2SFormer forward at
    batch 8 on 2 cores. Process-wide and idempotent; a no-op off glibc."""
    global _tuned
    if _tuned or not sys.platform.startswith("linux"):
        return _tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
                      and libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        _tuned = False
    log.info("large-allocation tuning %s", "on" if _tuned else "unavailable")
    return _tuned


def one_blas_thread() -> bool:
    """Limits numpy's BLAS (OpenBLAS, MKL) in this process to one thread, for good.

    The scan's numpy work beside the network is small products (a score's dot product over a
    map, the 64 x 64 DCT of the double-JPEG clue); on more threads they gain nothing, and the
    BLAS threads then spin on the cores the network and the other scan workers need: that
    cost about a tenth of a 2-core scan. Process-wide and idempotent (threadpoolctl, which
    finds the BLAS libraries loaded here); False where it is not installed."""
    global _blas_limited
    if _blas_limited:
        return True
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; without it only speed suffers
        return False
    threadpool_limits(limits=1, user_api="blas")  # kept: not used as a context manager
    _blas_limited = True
    return True


_blas_limited = False
