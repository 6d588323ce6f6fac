"""What preemption handling costs: the per-step signal check, and the checkpoint written on a signal.

    python benchmarks/preemption_cost.py [--output_dir /tmp/preemption-cost] [--checks 2000]

1. The check at every optimizer-step boundary (`PreemptionHandler.stop_requested`): with one process a Python
   attribute read; with several, an all-reduce of one integer over a CPU (gloo) group, timed here with two
   processes on this machine.
2. The checkpoint a signal writes: `save_checkpoint` of the default 64 px model with its AdamW state, the
   same call train.py makes, in seconds (what a scheduler's grace period must cover).
The run lock costs one `flock` at start and nothing per step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.training.preemption import PreemptionHandler, parse_signals


def single_process_check(checks: int) -> float:
    handler = PreemptionHandler(parse_signals(["SIGTERM", "SIGUSR1"])).install()
    start = time.perf_counter()
    for _ in range(checks):
        handler.stop_requested()
    seconds = (time.perf_counter() - start) / checks
    handler.restore()
    return seconds


def _two_process_worker(rank: int, checks: int, rendezvous: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    handler = PreemptionHandler(parse_signals(["SIGTERM"]))
    for _ in range(50):  # warm-up
        handler.stop_requested()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(checks):
        handler.stop_requested()
    results[rank] = (time.perf_counter() - start) / checks
    dist.destroy_process_group()


def two_process_check(checks: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        results = mp.Manager().dict()
        mp.spawn(_two_process_worker, args=(checks, os.path.join(scratch, "rendezvous"), results), nprocs=2)
        return max(results.values())


def checkpoint_seconds(output_dir: Path, repeats: int = 3) -> tuple[float, int]:
    from accelerate import Accelerator

    from swin_tiny_hf.training.checkpointing import folder_bytes, save_checkpoint

    accelerator = Accelerator(cpu=True)
    model = SwinTinyForImageClassification(SwinTinyConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    model(torch.randn(2, 3, 64, 64), labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()  # AdamW's moments exist, as in a run
    model, optimizer = accelerator.prepare(model, optimizer)
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        folder = save_checkpoint(accelerator, output_dir, f"step_{index}", {"completed_steps": index}, {}, model=model)
        times.append(time.perf_counter() - start)
    return min(times), folder_bytes(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/preemption-cost")
    parser.add_argument("--checks", type=int, default=2000)
    args = parser.parse_args()
    one = single_process_check(args.checks)
    two = two_process_check(args.checks)
    print(f"signal check per optimizer step: {one * 1e6:.2f} us with one process, {two * 1e6:.1f} us with two (gloo)")
    output_dir = Path(args.output_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    seconds, size = checkpoint_seconds(output_dir)
    print(f"checkpoint on a signal (64 px model + AdamW): {seconds:.2f} s, {size / 2**20:.0f} MiB, to {output_dir}")
    shutil.rmtree(output_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
