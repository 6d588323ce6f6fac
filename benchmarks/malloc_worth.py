"""What keeping freed memory for reuse (`swin_tiny_hf.cpu_memory.keep_freed_memory`, which train.py calls on CPU
runs) is worth: images/s with glibc's default malloc and with freed memory kept, in fresh processes.

    python benchmarks/malloc_worth.py [--rounds 3] [--repeats 3] [--batch_size 64]

The setting is process-wide and cannot be undone inside a process, so each measurement is a new Python process
(the two settings alternate, round by round, so that drift on the machine hits both alike). Each process times
swin_tiny_hf and timm's SwinTransformer (fused attention) at the default 64 px config, fp32 and bf16 autocast,
inference and a training step (best of `--repeats`, after a warm-up), as benchmarks/model_throughput.py does.
Printed: per row the median images/s of the rounds with each setting, and their ratio (kept / default).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ONE_PROCESS = """
import json, sys
sys.path.insert(0, {here!r})
import torch
from swin_tiny_hf.cpu_memory import keep_freed_memory
if {keep}:
    assert keep_freed_memory()
from model_throughput import Candidate, timm_swin
from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.convert import timm_swin_kwargs

torch.manual_seed(0)
config = SwinTinyConfig()
pixels, labels = torch.randn({batch}, 3, 64, 64), torch.randint(0, 200, ({batch},))
rows = []
for dtype in (None, torch.bfloat16):
    for name, model in (
        ("swin_tiny_hf", SwinTinyForImageClassification(config)),
        ("timm (fused attn)", timm_swin(True, **timm_swin_kwargs(config))),
    ):
        candidate = Candidate(name, model, pixels, labels, dtype)
        candidate.inference(), candidate.train_step()
        for _ in range({repeats}):
            candidate.measure()
        precision = "bf16 autocast" if dtype else "fp32"
        rows += [[name, precision, mode, {batch} / seconds] for mode, seconds in candidate.best.items()]
print(json.dumps(rows))
"""


def measure(keep: bool, batch: int, repeats: int) -> dict[tuple, float]:
    script = ONE_PROCESS.format(here=str(HERE), keep=keep, batch=batch, repeats=repeats)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return {tuple(row[:3]): row[3] for row in json.loads(result.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()
    results = {False: [], True: []}
    for round_index in range(args.rounds):
        for keep in (False, True) if round_index % 2 == 0 else (True, False):
            results[keep].append(measure(keep, args.batch_size, args.repeats))
    print(f"\n### Freed memory kept against glibc's default (batch {args.batch_size}, {args.rounds} rounds)")
    print("| model | precision | mode | default malloc img/s | freed memory kept img/s | kept / default |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in results[False][0]:
        default = statistics.median(r[key] for r in results[False])
        kept = statistics.median(r[key] for r in results[True])
        print(f"| {' | '.join(key)} | {default:.1f} | {kept:.1f} | x{kept / default:.2f} |")


if __name__ == "__main__":
    main()
