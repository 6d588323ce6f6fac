"""What preemption handling costs: the per-step signal check, and the checkpoint written on a signal.

    python benchmarks/preemption_cost.py [--output_dir /tmp/preemption-cost] [--checks 2000]

1. The check at every optimizer-step boundary (`PreemptionHandler.stop_requested`): with one process a Python
   attribute read; with several, an asynchronous all-reduce of one integer over a CPU (gloo) group. Timed here
   with two processes on this machine, between steps of stand-in work (a matrix product of about the time of a
   tiny model's step), against the same steps without the check: the cost a step really sees.
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


def _two_process_worker(rank: int, steps: int, every: int, rendezvous: str, results) -> None:
    torch.set_num_threads(1)  # one core each
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    handler = PreemptionHandler(parse_signals(["SIGTERM"]), check_every=every)
    a = torch.randn(384, 384)

    def step():
        for _ in range(8):
            a @ a  # about 3 ms of work: a tiny model's step, where a fixed cost weighs most

    timings = {}
    for _ in range(3):  # interleaved, best of 3
        for with_check in (False, True):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(steps):
                step()
                if with_check:
                    handler.stop_requested()
            elapsed = (time.perf_counter() - start) / steps
            timings[with_check] = min(timings.get(with_check, float("inf")), elapsed)
    handler.restore()
    results[rank] = (timings[False], timings[True])
    dist.destroy_process_group()


def two_process_check(steps: int, every: int) -> tuple[float, float]:
    """(seconds per step without the check, with it), the slower process's."""
    with tempfile.TemporaryDirectory() as scratch:
        results = mp.Manager().dict()
        mp.spawn(_two_process_worker, args=(steps, every, os.path.join(scratch, "rendezvous"), results), nprocs=2)
        return max(r[0] for r in results.values()), max(r[1] for r in results.values())


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
    parser.add_argument("--checks", type=int, default=500, help="steps timed with and without the check")
    args = parser.parse_args()
    one = single_process_check(args.checks)
    print(f"signal check per optimizer step, one process: {one * 1e6:.2f} us")
    for every in (1, 10):
        plain, checked = two_process_check(args.checks, every)
        print(
            f"two processes (gloo), a collective every {every} steps: {plain * 1e3:.3f} ms a step without the "
            f"check, {checked * 1e3:.3f} ms with it ({100 * (checked / plain - 1):+.1f}%)"
        )
    output_dir = Path(args.output_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    seconds, size = checkpoint_seconds(output_dir)
    print(f"checkpoint on a signal (64 px model + AdamW): {seconds:.2f} s, {size / 2**20:.0f} MiB, to {output_dir}")
    shutil.rmtree(output_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
