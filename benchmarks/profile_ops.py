"""Where a forward or a training step spends its time, per operator, on this CPU: the table of BENCHMARKS.md.

    python benchmarks/profile_ops.py [--models ours timm_fused] [--precisions fp32 bf16] [--steps 3] [--top 14]

For each model, precision (fp32, or bf16 autocast) and mode (inference: eval forward under no_grad; train: forward,
cross-entropy, backward and an AdamW step), `torch.profiler` records `--steps` iterations after a warm-up. The
table lists the operators by self time (time in the operator less the operators it calls): milliseconds per
iteration, share of the iteration, calls per iteration, and, for the products where the profiler counts their
FLOPs (matrix products; not the convolutions, whose time sits in a child operator), the achieved GFLOP/s as a
share of this machine's ceiling for that precision: the faster of MKL's sgemm and oneDNN's 1x1 convolution on a
2048^3 product in fp32, oneDNN's bf16 GEMM in bf16 (as benchmarks/model_throughput.py measures them). Operators
are also summed into families (linears, attention, GELU, LayerNorm, copies and layout, elementwise, optimizer,
other), the view a change is planned from; a family's rate is its FLOPs (torch's FlopCounterMode, which counts
the backward's products too) over its time. Run on a quiet machine: other jobs distort every row.
"""

from __future__ import annotations

import argparse
import platform
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.convert import timm_swin_kwargs

try:  # run as a script (benchmarks/ on sys.path) or as a module
    import model_throughput as throughput
except ImportError:  # pragma: no cover
    from benchmarks import model_throughput as throughput

# Operator families: the first pattern that an operator's name contains names its family.
FAMILIES = (
    ("linears (conv / GEMM)", ("convolution", "conv2d", "addmm", "aten::mm", "linear", "mkldnn")),
    ("attention", ("attention", "bmm", "softmax", "baddbmm", "aten::matmul")),
    ("GELU", ("gelu",)),
    ("LayerNorm", ("layer_norm",)),
    ("copies and layout", ("copy_", "clone", "contiguous", "_to_copy", "aten::to", "roll", "cat", "index", "pad")),
    ("optimizer", ("_foreach", "adamw", "lerp", "addcdiv", "addcmul", "sqrt")),
    ("elementwise", ("add", "mul", "div", "fill_", "bernoulli", "sum", "zero_", "where", "all", "masked_fill")),
)
# Operators whose FLOPs the profiler counts, and whose rate is compared with the ceiling.
PRODUCTS = ("conv", "mm", "bmm", "addmm", "linear", "attention", "matmul")


def family_of(name: str) -> str:
    lowered = name.lower()
    for family, patterns in FAMILIES:
        if any(p in lowered for p in patterns):
            return family
    return "other"


def iteration(model, pixels, labels, optimizer, train: bool, dtype):
    autocast = torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    if not train:
        with torch.no_grad(), autocast:
            model(pixels)
        return
    with autocast:
        logits = throughput.logits_of(model(pixels))
    torch.nn.functional.cross_entropy(logits.float(), labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# Where a copy comes from, read from the operators that called it (innermost first): the first pattern found in the
# chain of its callers names its origin.
COPY_ORIGINS = (
    ("weight gradients to fp32 (autocast's weight cast, backward)", ("ToCopyBackward",)),
    ("bias broadcast into addmm's output (before the product)", ("aten::addmm",)),
    ("weights to the autocast dtype (autocast's weight cast, forward)", ("aten::to < aten::linear",)),
    ("torch.roll (a cat of two slices, one dimension at a time)", ("aten::roll",)),
    ("q, k, v gradients stacked (unbind's backward)", ("UnbindBackward",)),
    ("layouts: permute + reshape / flatten, forward and backward", ("ViewBackward", "aten::reshape", "aten::flatten")),
    ("LayerNorm's contiguous input", ("layer_norm",)),
    # A `.to()` that no other operator called: Python code casting. In our bf16 inference that is mostly oneDNN's
    # fused linear casting its weights and fp32 input (what autocast does inside `F.linear`); also the attention
    # mask per block and the benchmark's logits. "$": the collected callers end there.
    ("`.to()` called from Python (ours, bf16 inference: oneDNN's linear casting its weights)", ("aten::to$",)),
)


def copy_origin(callers: list[str]) -> str:
    chain = " < ".join(callers)
    for origin, patterns in COPY_ORIGINS:
        if any(chain.endswith(p[:-1]) if p.endswith("$") else p in chain for p in patterns):
            return origin
    return "other"


def copies_by_origin(prof, steps: int) -> dict[str, float]:
    """Self seconds per iteration of the copies (`aten::copy_`, `aten::cat`), by origin (COPY_ORIGINS)."""
    origins = defaultdict(float)
    for event in prof.events():
        if event.name not in ("aten::copy_", "aten::cat"):
            continue
        callers, parent = [], event.cpu_parent
        while parent is not None and len(callers) < 4:
            callers.append(parent.name)
            parent = parent.cpu_parent
        origins[copy_origin(callers)] += event.self_cpu_time_total / 1e6 / steps
    return origins


def profile_one(model, pixels, labels, train: bool, dtype, steps: int):
    """{operator: (self seconds, calls, flops)} per iteration, the iteration's total self seconds, and the copies'
    self seconds per iteration by origin."""
    model.train(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as train.py's
    for _ in range(2):  # warm-up: oneDNN primitives and autocast caches are built on the first calls
        iteration(model, pixels, labels, optimizer, train, dtype)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(steps):
            iteration(model, pixels, labels, optimizer, train, dtype)
    rows = {}
    for event in prof.key_averages():
        if event.self_cpu_time_total <= 0:
            continue
        rows[event.key] = (event.self_cpu_time_total / 1e6 / steps, event.count / steps, (event.flops or 0) / steps)
    return rows, sum(seconds for seconds, _, _ in rows.values()), copies_by_origin(prof, steps)


def flops_by_family(model, pixels, labels, train: bool, dtype) -> dict[str, float]:
    """FLOPs of one iteration per family, from torch's FlopCounterMode, which also counts the backward's products
    (the profiler counts forward ones only)."""
    model.train(train)
    with FlopCounterMode(display=False) as counter, throughput.pytorch_ops_only():  # it misses oneDNN's fused linear
        iteration(model, pixels, labels, torch.optim.SGD(model.parameters(), lr=0.0), train, dtype)
    families = defaultdict(float)
    for op, flops in counter.get_flop_counts()["Global"].items():
        families[family_of(str(op).replace(".", "::"))] += flops
    return families


def print_table(title: str, rows, total: float, ceiling: float, top: int, family_flops: dict[str, float]) -> None:
    print(f"\n### {title}: {1000 * total:.0f} ms of operator time per iteration")
    print("| operator | ms / iteration | share | calls | GFLOP/s (% of ceiling) |")
    print("| --- | --- | --- | --- | --- |")
    ordered = sorted(rows.items(), key=lambda item: -item[1][0])
    for name, (seconds, calls, flops) in ordered[:top]:
        rate = ""
        if flops and any(p in name for p in PRODUCTS):
            rate = f"{flops / seconds / 1e9:.0f} ({100 * flops / seconds / 1e9 / ceiling:.0f}%)"
        print(f"| `{name}` | {1000 * seconds:.1f} | {100 * seconds / total:.1f}% | {calls:.0f} | {rate} |")
    families = defaultdict(float)
    for name, (seconds, _, _) in rows.items():
        families[family_of(name)] += seconds
    print("\n| family | ms / iteration | share | GFLOP/s (% of ceiling) |")
    print("| --- | --- | --- | --- |")
    for family, seconds in sorted(families.items(), key=lambda item: -item[1]):
        flops = family_flops.get(family, 0.0)
        rate = f"{flops / seconds / 1e9:.0f} ({100 * flops / seconds / 1e9 / ceiling:.0f}%)" if flops else ""
        print(f"| {family} | {1000 * seconds:.1f} | {100 * seconds / total:.1f}% | {rate} |")


def print_copies(copies: dict[str, float], total: float) -> None:
    print("\n| copies (`aten::copy_`, `aten::cat`) by origin | ms / iteration | share |")
    print("| --- | --- | --- |")
    for origin, seconds in sorted(copies.items(), key=lambda item: -item[1]):
        print(f"| {origin} | {1000 * seconds:.1f} | {100 * seconds / total:.1f}% |")
    print(f"| all copies | {1000 * sum(copies.values()):.1f} | {100 * sum(copies.values()) / total:.1f}% |")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            lines = info.read().splitlines()
    except OSError:  # pragma: no cover
        return platform.processor()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("flags", "").split()
    isa = ", ".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no AVX-512"
    return (
        f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')}; "
        f"{isa}), {torch.get_num_threads()} threads"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["ours", "timm_fused"], choices=["ours", "timm", "timm_fused"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--modes", nargs="+", default=["inference", "train"], choices=["inference", "train"])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=14, help="operators listed per table (families: all)")
    throughput.add_malloc_flag(parser)
    args = parser.parse_args()
    malloc = throughput.malloc_as_asked(args)
    torch.manual_seed(0)
    rates = throughput.matmul_gflops()
    ceilings = {"fp32": max(rates["torch.mm (MKL)"], rates["1x1 conv (oneDNN)"]), "bf16": rates["bf16 torch.mm"]}
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; malloc: {malloc}")
    print("ceilings (2048^3 product): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()))
    config = SwinTinyConfig()
    builders = {
        "ours": lambda: SwinTinyForImageClassification(config),
        "timm": lambda: throughput.timm_swin(False, **timm_swin_kwargs(config)),
        "timm_fused": lambda: throughput.timm_swin(True, **timm_swin_kwargs(config)),
    }
    pixels = torch.randn(args.batch_size, 3, config.image_size, config.image_size)
    labels = torch.randint(0, config.num_labels, (args.batch_size,))
    for name in args.models:
        for precision in args.precisions:
            for mode in args.modes:
                model = builders[name]()
                dtype = torch.bfloat16 if precision == "bf16" else None
                rows, total, copies = profile_one(model, pixels, labels, mode == "train", dtype, args.steps)
                family_flops = flops_by_family(model, pixels, labels, mode == "train", dtype)
                title = f"{name}, {precision}, {mode} (batch {args.batch_size})"
                print_table(title, rows, total, ceilings[precision], args.top, family_flops)
                print_copies(copies, total)


if __name__ == "__main__":
    main()
