"""keep_freed_memory: tensors made and freed again and again land on pages that are already there.

In a fresh interpreter (the setting is process-wide, so the subprocess is the point): ten rounds of three 24 MiB
tensors, made, written and freed, as a training step's temporaries are; minor page faults counted before and after
the call."""

import subprocess
import sys

import pytest

CHURN = """
import resource
import torch
from swin_tiny_hf.cpu_memory import keep_freed_memory

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def churn():
    start = faults()
    for _ in range(10):
        tensors = [torch.ones(6 * 2**20) for _ in range(3)]  # 3 x 24 MiB, every page written
        del tensors
    return faults() - start

churn()  # the first round of each phase may grow the heap
before = churn()
took = keep_freed_memory()
churn()
print(before, churn(), took)
"""


def test_freed_memory_is_reused_without_page_faults():
    result = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    before, after, took = result.stdout.split()
    if took != "True":
        pytest.skip("the C library is not glibc: keep_freed_memory does nothing there")
    pages = 24 * 2**20 // 4096
    assert int(before) >= 10 * pages  # glibc's default: at least one tensor a round on fresh pages
    assert int(after) < pages // 10, (before, after)  # kept: the same pages serve every round


def test_it_does_nothing_and_says_so_off_linux(monkeypatch):
    from swin_tiny_hf import cpu_memory

    monkeypatch.setattr(cpu_memory.sys, "platform", "darwin")
    assert cpu_memory.keep_freed_memory() is False
