"""The process's memory allocator: which one runs, and glibc settings that stop page-fault churn.

PyTorch on CPU allocates every activation with ``malloc`` and frees it after the layer. glibc
serves large blocks with ``mmap`` and, by default, also returns freed heap memory to the kernel,
so every batch faults its activations in again, page by page, in the kernel (``sys`` time). On
the 2-core development machine, scoring 768 GZ1 galaxies at 64 px (efficientnet_b0, batch 128)
took 559,000 minor page faults in fp32 and 94,000 in bf16; with :func:`tune_glibc_malloc` 15,000
and 9,500, and ``sys`` time went from 1.2 s to 0.1 s (docs/scale.md).

:func:`tune_glibc_malloc` raises glibc's mmap threshold to its maximum (32 MiB on 64-bit) and
keeps up to ``trim_mib`` of freed memory in the heap instead of handing it back, which is what
tcmalloc and jemalloc do on their own. It changes nothing when another allocator was preloaded
(``LD_PRELOAD``), the C library is not glibc, or ``ZOOBOT_MALLOC_TUNING=0`` is set (to measure
without it). Blocks above 32 MiB still come from ``mmap``;
keep inference batches small enough for that (batch 64 at 64 px in fp32) or preload tcmalloc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
GLIBC_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # HEAP_MAX_SIZE / 2 on 64-bit
_PRELOADED = ("tcmalloc", "jemalloc", "mimalloc")
TUNING_SWITCH = "ZOOBOT_MALLOC_TUNING"  # "0": leave glibc's defaults

_tuned = False


def allocator_name() -> str:
    """"tcmalloc", "jemalloc" or "mimalloc" when preloaded (LD_PRELOAD), else "glibc" or "unknown"."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in _PRELOADED:
        if name in preload:
            return name
    return "glibc" if _libc() is not None else "unknown"


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def tune_glibc_malloc(trim_mib: int = 1024, top_pad_mib: int = 64) -> bool:
    """Keep freed memory in glibc's heap (see the module docstring). True when settings changed.

    Idempotent; a no-op (False) under a preloaded allocator or without glibc. The heap may hold
    up to ``trim_mib`` of freed memory, which the process can reuse at once.
    """
    global _tuned
    if _tuned:
        return False
    if allocator_name() != "glibc" or os.environ.get(TUNING_SWITCH) == "0":
        return False
    libc = _libc()
    mib = 1024 * 1024
    settings = ((M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, trim_mib * mib), (M_TOP_PAD, top_pad_mib * mib))
    _tuned = all(libc.mallopt(ctypes.c_int(key), ctypes.c_int(value)) == 1 for key, value in settings)
    return _tuned
