"""Freed memory kept for reuse: on a CPU, the model's large temporaries then cost no page faults.

A forward at batch 64 makes tensors of up to 25 MB (the MLP's hidden map in the first stage), and a training step
frees and makes them again on every call. glibc's malloc serves such sizes with fresh `mmap`s and gives them back
with `munmap` when freed (above its mmap threshold), and trims the heap's free top back to the system. (It lifts its
threshold after the first large free, but whether the heap then keeps the pages depends on where it lies: in fresh
processes here, two in three still faulted every round.) Either way the
next tensor of that size lands on pages the kernel must fault in and zero, one 4 KiB page at a time: on the VMs this
project measures on, that costs more than the arithmetic on the tensor. Profiled on a 2-core AMD EPYC (Zen 5) at
the first stage's MLP shape: the 1x1 convolution 12.1 -> 5.9 ms and the GELU after it 7.1 -> 2.4 ms per call
once freed memory is kept (BENCHMARKS.md has the whole model).

`keep_freed_memory()` tells glibc to keep it: allocations up to 32 MiB (glibc's largest mmap threshold) come from
the heap and are reused, and the heap is not trimmed below 2 GiB of free top. The cost is that the process's
resident memory stays at its peak rather than shrinking between steps, which a training or serving process reaches
anyway. It is process-wide, so it is a choice of the program (train.py makes it on CPU runs; a library import never
does; a serving process calls it once at its start), the same as the environment variables
`MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647` set before Python starts, or preloading
jemalloc or tcmalloc (what `python -m torch.backends.xeon.run_cpu` does where they are installed).
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # the largest glibc accepts on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed memory for reuse (see the module docstring). Returns whether both settings
    took: False where the C library is not glibc (macOS, Windows, musl), which changes nothing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    took = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]  # each tried
    return all(took)
