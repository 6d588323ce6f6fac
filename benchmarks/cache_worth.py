"""What caching the masks would be worth: inference images/s with and without a cache, in one run.

    python benchmarks/cache_worth.py [--batch_size 64] [--sizes 64 80] [--rounds 7] [--iterations 2]

The model builds on each forward every block's additive mask (its relative position bias gathered from the
table, plus the shift mask) and each stage's shift mask, for the input's size. A cache of the first (the model
once had one) goes stale when weights change without bumping their version counter; a buffer of the second
(the model once kept one, for the config's size) is a second path for one size, empty on the meta device until
`_init_weights` fills it. This script measures what caching them would save, on the default config
(SwinTinyConfig(), 64 px) in eval mode under `torch.no_grad`:

- "cached": `WindowAttention.attention_mask` and `SwinStage.shift_mask_for` wrapped in a memo, valid here only
  because the weights never change during the run;
- "uncached": the model as it ships.

fp32 and bf16 autocast; the variants alternate inside every round (which goes first alternates too), so drift and
other jobs on the cores hit both alike. Prints per variant the median images/s and the spread (min-max) over the
rounds, the median of the per-round ratios, and the time the building itself takes per forward, measured
directly (median and fastest of 7), for the attention masks and the shift masks apart: the most any cache could
save, a figure that contention on the cores distorts less than a throughput ratio. Last, what building each
block's relative position index (a buffer: a constant of the block) on every forward would cost.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time

import torch

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.modeling_swin_tiny import SwinStage, WindowAttention
from swin_tiny_hf.windows import relative_position_index

UNCACHED = {"attention_mask": WindowAttention.attention_mask, "shift_mask_for": SwinStage.shift_mask_for}


@contextlib.contextmanager
def masks_memoised():
    """Within the block, each mask is built once per (module, size, dtype) and then reused."""
    memo = {}

    def attention_mask(self, shift_mask, dtype):
        key = (id(self), None if shift_mask is None else id(shift_mask), dtype)
        if key not in memo:
            memo[key] = UNCACHED["attention_mask"](self, shift_mask, dtype)
        return memo[key]

    def shift_mask_for(self, height, width, device):
        key = (id(self), height, width, device)
        if key not in memo:
            memo[key] = UNCACHED["shift_mask_for"](self, height, width, device)
        return memo[key]

    WindowAttention.attention_mask, SwinStage.shift_mask_for = attention_mask, shift_mask_for
    try:
        yield
    finally:
        WindowAttention.attention_mask = UNCACHED["attention_mask"]
        SwinStage.shift_mask_for = UNCACHED["shift_mask_for"]


def precision_context(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def images_per_second(model, pixel_values, precision: str, cached: bool, iterations: int) -> float:
    with torch.no_grad(), precision_context(precision), masks_memoised() if cached else contextlib.nullcontext():
        model(pixel_values)  # fills the memo (cached) and warms the allocator (both)
        start = time.perf_counter()
        for _ in range(iterations):
            model(pixel_values)
        return iterations * pixel_values.shape[0] / (time.perf_counter() - start)


def mask_seconds_per_forward(model, pixel_values, precision: str, repeats: int = 7) -> dict[str, list[float]]:
    """Seconds spent building the attention masks ("attention_masks") and the shift masks ("shift_masks") in each of
    `repeats` uncached forwards, and the seconds of each forward ("forward")."""
    spent = {"attention_masks": 0.0, "shift_masks": 0.0}

    def timed(function, name):
        def wrapper(*args):
            start = time.perf_counter()
            result = function(*args)
            spent[name] += time.perf_counter() - start
            return result

        return wrapper

    seconds = {"attention_masks": [], "shift_masks": [], "forward": []}
    WindowAttention.attention_mask = timed(UNCACHED["attention_mask"], "attention_masks")
    SwinStage.shift_mask_for = timed(UNCACHED["shift_mask_for"], "shift_masks")
    try:
        with torch.no_grad(), precision_context(precision):
            for _ in range(repeats):
                spent.update(attention_masks=0.0, shift_masks=0.0)
                start = time.perf_counter()
                model(pixel_values)
                seconds["forward"].append(time.perf_counter() - start)
                for name, value in spent.items():
                    seconds[name].append(value)
    finally:
        WindowAttention.attention_mask = UNCACHED["attention_mask"]
        SwinStage.shift_mask_for = UNCACHED["shift_mask_for"]
    return seconds


def index_seconds_per_forward(model, repeats: int = 7) -> list[float]:
    """Seconds that building every block's relative position index would take, per forward (of `repeats`)."""
    windows = [module.window for module in model.modules() if isinstance(module, WindowAttention)]
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for window in windows:
            relative_position_index(window)
        seconds.append(time.perf_counter() - start)
    return seconds


def cpu_name() -> str:
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return platform.processor()
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    flags = fields.get("flags", "")
    return (
        f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, "
        f"avx512_bf16={'avx512_bf16' in flags.split()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 80], help="input sides in px (64: config's)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=2, help="timed forwards per variant per round")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = SwinTinyForImageClassification(SwinTinyConfig()).eval()
    print(f"CPU: {cpu_name()}; {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(f"batch {args.batch_size}, {args.rounds} rounds x {args.iterations} forwards per variant\n")
    for size in args.sizes:
        pixel_values = torch.randn(args.batch_size, 3, size, size)
        for precision in ("fp32", "bf16"):
            rates = {True: [], False: []}
            for round_index in range(args.rounds):
                order = (True, False) if round_index % 2 == 0 else (False, True)
                for cached in order:
                    rates[cached].append(images_per_second(model, pixel_values, precision, cached, args.iterations))
            ratios = [c / u for c, u in zip(rates[True], rates[False])]
            seconds = mask_seconds_per_forward(model, pixel_values, precision)
            for cached in (True, False):
                values, name = rates[cached], "cached  " if cached else "uncached"
                print(
                    f"{size} px {precision} {name}: median {statistics.median(values):7.1f} images/s "
                    f"(min {min(values):.1f}, max {max(values):.1f})"
                )
            print(
                f"{size} px {precision} cached/uncached: median ratio {statistics.median(ratios):.4f} "
                f"(min {min(ratios):.4f}, max {max(ratios):.4f})"
            )
            for name, pick in (("median", statistics.median), ("fastest", min)):
                forward = pick(seconds["forward"])
                for masks in ("attention_masks", "shift_masks"):
                    built = pick(seconds[masks])
                    print(
                        f"{size} px {precision} building the {masks.replace('_', ' ')}, {name} of "
                        f"{len(seconds['forward'])} forwards: {built * 1e3:.3f} ms of {forward * 1e3:.1f} ms "
                        f"({100 * built / forward:.3f}%)"
                    )
            print()
    index = index_seconds_per_forward(model)
    print(
        f"building every block's relative position index, per forward: median {statistics.median(index) * 1e3:.3f} "
        f"ms, fastest {min(index) * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()
