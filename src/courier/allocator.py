"""Give large freed blocks back to the operating system, so a worker's memory stays flat.

glibc's malloc serves a large block (a 10 MB message body) with its own
``mmap`` and unmaps it when freed, but it also *raises* that threshold to
the size of the last block it unmapped, so from the second large body on,
bodies come from the heap, whose freed space a long-running worker keeps:
its resident memory climbs with every burst of large messages, and its peak
grows with heap fragmentation. Fixing the threshold (``mallopt``) turns the
adjustment off; only blocks this large ever take the ``mmap`` path, so the
cost (a system call per large allocation) falls on large messages alone.

A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["MMAP_THRESHOLD", "return_large_blocks_to_the_os"]

logger = logging.getLogger("courier.worker")

#: Blocks at least this large are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 256 * 1024
#: glibc's ``M_MMAP_THRESHOLD`` parameter number.
_M_MMAP_THRESHOLD = -3

_done = False


def return_large_blocks_to_the_os() -> bool:
    """Fix glibc's mmap threshold for this process (once); False where it cannot."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False  # not glibc (musl, macOS): nothing to tune
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not _done:
        logger.debug("mallopt(M_MMAP_THRESHOLD) refused; large bodies may linger in the heap")
    return _done
