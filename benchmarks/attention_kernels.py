"""Attention per block on this machine: PyTorch's SDPA against the explicit products, at the model's windows.

    python benchmarks/attention_kernels.py [--batch_size 64] [--repeats 5] [--precisions fp32 bf16]

For each block of the 64 px model (its window, heads and map: one row per distinct shape, with the number of blocks
of that shape), the time of `F.scaled_dot_product_attention` and of `eager_window_attention` (two batched matrix
products and a softmax) on the same queries, keys, values and mask: in inference (no gradient) and in training
(forward and backward, the mask needing a gradient as the learned bias does, which sends SDPA to its math
fallback on the CPU). `sdpa_is_slower` in `swin_tiny_hf/modeling_swin_tiny.py` picks between them from figures of
this table; rerun it on a CPU it was not measured on. Timed interleaved, best of `repeats` rounds.
"""

from __future__ import annotations

import argparse
import time
import unittest.mock
from collections import Counter

import torch
import torch.nn.functional as F

from swin_tiny_hf import SwinTinyConfig, SwinTinyModel
from swin_tiny_hf.modeling_swin_tiny import eager_window_attention

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def block_shapes(config: SwinTinyConfig, batch: int) -> Counter:
    """(B', G, N, d) of each block's queries at `config.image_size`, counted: recorded from one forward of the
    model (fp32, no gradient: every block calls SDPA), so they are `WindowAttention.forward`'s own grouping (W-MSA:
    every window in the batch dimension; SW-MSA: windows with the heads, each with its own mask) and clipped
    windows."""
    shapes = Counter()
    sdpa = F.scaled_dot_product_attention

    def recorded(query, *args, **kwargs):
        shapes[tuple(query.shape)] += 1
        return sdpa(query, *args, **kwargs)

    model = SwinTinyModel(config).eval()
    pixels = torch.zeros(batch, config.num_channels, config.image_size, config.image_size)
    with unittest.mock.patch.object(F, "scaled_dot_product_attention", recorded), torch.no_grad():
        model(pixels)
    return shapes


def attention_calls(shape: tuple[int, int, int, int], dtype: torch.dtype, train: bool):
    """Two callables on the same random (B', G, N, d) queries, keys and values and (1, G, N, N) mask: SDPA and the
    explicit products, each a forward, and in training a backward to all four."""
    b, g, n, d = shape
    q, k, v = (torch.randn(shape, dtype=dtype, requires_grad=train) for _ in range(3))
    mask = torch.randn(1, g, n, n, dtype=dtype, requires_grad=train)

    def run(attention):
        with torch.set_grad_enabled(train):
            out = attention()
            if train:
                out.sum().backward()

    def sdpa():
        run(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def products():
        run(lambda: eager_window_attention(q, k, v, mask, 0.0, (b, 1, g, n, n))[0])

    return sdpa, products


def milliseconds(function) -> float:
    start = time.perf_counter()
    function()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"])
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = block_shapes(SwinTinyConfig(), args.batch_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    for precision in args.precisions:
        for mode in ("inference", "train"):
            train = mode == "train"
            print(f"\n### {precision}, {mode} (ms per call, best of {args.repeats})")
            print("| (B', G, N, d) | blocks | SDPA | products | products / SDPA |")
            print("| --- | --- | --- | --- | --- |")
            totals = [0.0, 0.0]
            for (b, g, n, d), blocks in shapes.items():
                sdpa, products = attention_calls((b, g, n, d), DTYPES[precision], train)
                sdpa(), products()  # warm-up
                rounds = [[milliseconds(f) for f in (sdpa, products)] for _ in range(args.repeats)]  # interleaved
                times = [min(column) for column in zip(*rounds)]
                totals = [total + blocks * t for total, t in zip(totals, times)]
                print(f"| {(b, g, n, d)} | {blocks} | {times[0]:.2f} | {times[1]:.2f} | x{times[1] / times[0]:.2f} |")
            print(
                f"| all blocks | {sum(shapes.values())} | {totals[0]:.1f} | {totals[1]:.1f} | "
                f"x{totals[1] / totals[0]:.2f} |"
            )


if __name__ == "__main__":
    main()
