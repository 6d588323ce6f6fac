"""Model throughput on this machine: swin_tiny_hf against timm's and transformers' Swin, in one process.

    python benchmarks/model_throughput.py [--batch_size 64] [--repeats 5] [--skip_224] [--compare_with DIR]
                                          [--compiled]

Prints images/s for inference (no grad, eval) and for a training step (forward, backward, AdamW), the
ratio to each reference, the parameter count, and the achieved GFLOP/s against this machine's fp32
matmul rate (measured through MKL and through oneDNN; the faster is the ceiling). Models are timed
interleaved (round-robin, every other round in reverse order, best of `repeats`), so drift hits all alike; the
ratio of each round (the median and range over rounds) is printed beside the ratio of the best rounds.
At 64 px the reference is timm's SwinTransformer at the same config (default attention, and fused
attention); transformers' Swin cannot run at 64 px, so it is compared at 224 px (classic Swin-T).
`--compare_with DIR` adds the swin_tiny_hf of another checkout (e.g. `git worktree add DIR <commit>`) at
both sizes, same weights, timed in the same round-robin: a before/after of a change, measured in one run.
`--compiled` adds swin_tiny_hf through `torch.compile` (inductor, default mode; train.py's `--torch_compile`) at
64 px, fp32 and bf16 autocast: the training graph and the inference graph each compile in the warm-up, whose time
is printed (minutes on a CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.convert import timm_swin_kwargs
from swin_tiny_hf.cpu_memory import keep_freed_memory


def matmul_gflops(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of a size^3 product: fp32 two ways, torch.mm (MKL sgemm on x86) and a 1x1 convolution (oneDNN),
    and bf16 (torch.mm, oneDNN).

    The fp32 two are the same arithmetic. On AMD CPUs MKL takes its AVX2 path, oneDNN uses AVX-512; the
    faster of the two is this machine's fp32 ceiling. swin_tiny_hf trains its fp32 linears as the convolution on
    AMD CPUs and as MKL's product elsewhere (`convolutions_pay_for_fp32_linears`: by the CPU's vendor, from the
    model's own shapes, not from this square product, where the two can trade places).
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    image = a.view(1, size, size // 64, 64).contiguous(memory_format=torch.channels_last)  # size tokens, NHWC
    weight = b.view(size, size, 1, 1)
    a16, b16 = a.bfloat16(), b.bfloat16()
    products = {
        "torch.mm (MKL)": lambda: a @ b,
        "1x1 conv (oneDNN)": lambda: torch.nn.functional.conv2d(image, weight),
        "bf16 torch.mm": lambda: a16 @ b16,
    }
    rates = {}
    for name, product in products.items():
        product()
        rates[name] = 2 * size**3 / min(_timed(product) for _ in range(repeats)) / 1e9
    return rates


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def logits_of(output):
    return output.logits if hasattr(output, "logits") else output


@contextlib.contextmanager
def pytorch_ops_only():
    """oneDNN off for a FLOP count: FlopCounterMode does not count oneDNN's fused linear, which a model of this
    package runs in CPU inference (`onednn_inference_dtype`); PyTorch's own ops do the same arithmetic."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note that TF32 on oneDNN is for Intel GPUs
        with torch.backends.mkldnn.flags(enabled=False):
            yield


def flops(model, pixels, train: bool) -> float:
    with FlopCounterMode(display=False) as counter, pytorch_ops_only():
        if train:
            logits_of(model(pixels)).float().logsumexp(-1).mean().backward()
        else:
            with torch.no_grad():
                model(pixels)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


class Candidate:
    def __init__(self, name, model, pixels, labels, autocast_dtype=None, compiled=False):
        self.name, self.model, self.pixels, self.labels = name, model, pixels, labels
        self.autocast = dict(device_type="cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None)
        # fused, as train.py's: one kernel for all parameters (the for-loop default was 7% of a bf16 step here)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        self.times = {"inference": [], "train": []}  # every round's seconds
        self.parameters = sum(p.numel() for p in model.parameters())
        self.flops = {"inference": flops(model.eval(), pixels, False), "train": flops(model.train(), pixels, True)}
        # the FLOPs are counted on the eager model; a compiled one runs the same arithmetic through inductor's kernels
        self.runner = torch.compile(model) if compiled else model

    def inference(self):
        self.model.eval()
        with torch.no_grad(), torch.autocast(**self.autocast):
            self.runner(self.pixels)

    def train_step(self):
        self.model.train()
        with torch.autocast(**self.autocast):
            logits = logits_of(self.runner(self.pixels))
        loss = torch.nn.functional.cross_entropy(logits.float(), self.labels)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def best(self) -> dict[str, float]:
        """The fastest round's seconds, per mode."""
        return {mode: min(times) for mode, times in self.times.items()}

    def measure(self):
        for mode, function in (("inference", self.inference), ("train", self.train_step)):
            self.times[mode].append(_timed(function))


def spread(times: list[float], batch: int) -> str:
    """The slowest and fastest round, in images/s."""
    return f"{batch / max(times):.1f}-{batch / min(times):.1f}"


def paired(ours: list[float], other: list[float]) -> str:
    """'ours xR' of each round (the other model's seconds over ours, timed back to back): the median, and the
    lowest and highest round's. On a machine whose speed drifts (a shared VM) it moves less than the ratio of
    the best rounds, which may come from different moments."""
    ratios = [o / u for u, o in zip(ours, other, strict=True)]
    return f"x{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def run(candidates: list[Candidate], repeats: int, machine_gflops: float, title: str) -> None:
    for candidate in candidates:  # warm-up (and a compiled candidate's compilation)
        start = time.perf_counter()
        candidate.inference()
        candidate.train_step()
        if candidate.runner is not candidate.model:
            print(f"{candidate.name}: compiled in {time.perf_counter() - start:.0f} s (its warm-up)")
    for round_ in range(repeats):
        # every other round in reverse order: a model is not always timed right after the same neighbour
        for candidate in candidates if round_ % 2 == 0 else candidates[::-1]:
            candidate.measure()
    batch = candidates[0].pixels.shape[0]
    print(f"\n## {title} (batch {batch}, best of {repeats}, {torch.get_num_threads()} threads)")
    print(
        "| model | params | inference img/s | ratio | train img/s | ratio | inference GFLOP/s (% of matmul) "
        "| train GFLOP/s (% of matmul) | spread of rounds, img/s: inference; train "
        "| ratio per round, median (range): inference; train |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ours = candidates[0]
    for c in candidates:
        rates = {k: batch / v for k, v in c.best.items()}
        ratios = {k: ours.best[k] / v for k, v in c.best.items()}  # >1: the reference is slower than ours
        gflops = {k: c.flops[k] / c.best[k] / 1e9 for k in c.best}
        print(
            f"| {c.name} | {c.parameters:,} | {rates['inference']:.1f} | ours x{1 / ratios['inference']:.2f} "
            f"| {rates['train']:.1f} | ours x{1 / ratios['train']:.2f} "
            f"| {gflops['inference']:.0f} ({100 * gflops['inference'] / machine_gflops:.0f}%) "
            f"| {gflops['train']:.0f} ({100 * gflops['train'] / machine_gflops:.0f}%) "
            f"| {spread(c.times['inference'], batch)}; {spread(c.times['train'], batch)} "
            f"| {'; '.join(paired(ours.times[mode], c.times[mode]) for mode in ('inference', 'train'))} |"
        )
    print(
        "('ours xR': swin_tiny_hf's images/s divided by this row's; R > 1 means swin_tiny_hf is faster. Images/s and "
        "ratios are of the best round; the spread is the slowest and fastest round; the ratio per round compares "
        "the two models' times within each round, steadier than the best rounds where the machine's speed drifts.)"
    )


def other_checkout(directory: str):
    """The swin_tiny_hf package of another checkout, imported as `swin_tiny_hf_compared`."""
    init = Path(directory) / "swin_tiny_hf" / "__init__.py"
    if not init.is_file():
        raise ValueError(f"--compare_with {directory}: expected a checkout of this project, found no {init}.")
    spec = importlib.util.spec_from_file_location("swin_tiny_hf_compared", init)
    module = importlib.util.module_from_spec(spec)
    sys.modules["swin_tiny_hf_compared"] = module
    spec.loader.exec_module(module)
    return module


def same_model_from(package, model: torch.nn.Module) -> torch.nn.Module:
    """`model` rebuilt with another checkout's classes, with the same weights."""
    config = package.SwinTinyConfig(**model.config.to_diff_dict())
    other = package.SwinTinyForImageClassification(config)
    other.load_state_dict(model.state_dict())
    return other


def timm_swin(fused: bool, **kwargs):
    import timm.layers
    from timm.models.swin_transformer import SwinTransformer

    timm.layers.set_fused_attn(fused, experimental=fused)
    model = SwinTransformer(**kwargs)
    timm.layers.set_fused_attn(False)
    return model


def add_malloc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--default_malloc",
        action="store_true",
        help="leave glibc's malloc as it is; by default freed memory is kept for reuse, as train.py does on CPU "
        "(swin_tiny_hf/cpu_memory.py): every model in the run gets the same",
    )


def malloc_as_asked(args: argparse.Namespace) -> str:
    """Keep freed memory unless --default_malloc; returns what the run's malloc does, for the printed header."""
    kept = False if args.default_malloc else keep_freed_memory()
    return "freed memory kept for reuse" if kept else "as the C library sets it"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batch_size_224", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip_224", action="store_true")
    parser.add_argument("--skip_bf16", action="store_true", help="leave out the bf16 autocast rows at 64 px")
    parser.add_argument("--compare_with", metavar="DIR", help="another checkout's swin_tiny_hf, timed alongside")
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="add swin_tiny_hf through torch.compile at 64 px (compiles for minutes)",
    )
    add_malloc_flag(parser)
    args = parser.parse_args()
    malloc = malloc_as_asked(args)
    compared = other_checkout(args.compare_with) if args.compare_with else None
    torch.manual_seed(0)
    rates = matmul_gflops()
    machine = max(rates["torch.mm (MKL)"], rates["1x1 conv (oneDNN)"])
    print(
        "product of 2048^2 matrices: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items())
        + f"; '% of matmul' below is of the faster fp32 rate, {machine:.0f} GFLOP/s; torch {torch.__version__}; "
        + f"malloc: {malloc}"
    )

    pixels, labels = torch.randn(args.batch_size, 3, 64, 64), torch.randint(0, 200, (args.batch_size,))
    config = SwinTinyConfig()
    small = timm_swin_kwargs(config)  # the same architecture in timm
    ours = SwinTinyForImageClassification(config)
    candidates = [Candidate("swin_tiny_hf (sdpa)", ours, pixels, labels)]
    if compared:
        candidates.append(
            Candidate(f"swin_tiny_hf at {args.compare_with} (sdpa)", same_model_from(compared, ours), pixels, labels)
        )
    candidates += [
        Candidate(
            "swin_tiny_hf (eager)",
            SwinTinyForImageClassification._from_config(config, attn_implementation="eager"),
            pixels,
            labels,
        ),
    ]
    if args.compiled:
        candidates.append(
            Candidate(
                "swin_tiny_hf (sdpa, torch.compile)",
                SwinTinyForImageClassification(config),
                pixels,
                labels,
                compiled=True,
            )
        )
    candidates += [
        Candidate("timm SwinTransformer", timm_swin(False, **small), pixels, labels),
        Candidate("timm SwinTransformer (fused attn)", timm_swin(True, **small), pixels, labels),
    ]
    if not args.skip_bf16:
        # bf16 autocast on the CPU: native on CPUs with avx512_bf16 or AMX, emulated (slow) elsewhere
        candidates += [
            Candidate(
                "swin_tiny_hf (sdpa, bf16 autocast)",
                SwinTinyForImageClassification(config),
                pixels,
                labels,
                torch.bfloat16,
            ),
            Candidate(
                "timm SwinTransformer (fused attn, bf16 autocast)",
                timm_swin(True, **small),
                pixels,
                labels,
                torch.bfloat16,
            ),
        ]
        if compared:
            candidates.insert(
                -1,
                Candidate(
                    f"swin_tiny_hf at {args.compare_with} (sdpa, bf16 autocast)",
                    same_model_from(compared, ours),
                    pixels,
                    labels,
                    torch.bfloat16,
                ),
            )
        if args.compiled:  # after the compared checkout's row, which stays beside ours
            candidates.insert(
                -1,
                Candidate(
                    "swin_tiny_hf (sdpa, bf16 autocast, torch.compile)",
                    SwinTinyForImageClassification(config),
                    pixels,
                    labels,
                    torch.bfloat16,
                    compiled=True,
                ),
            )
    run(candidates, args.repeats, machine, "64 px, Tiny ImageNet config (27.7M params)")

    if not args.skip_224:
        from transformers import SwinConfig, SwinForImageClassification

        pixels, labels = torch.randn(args.batch_size_224, 3, 224, 224), torch.randint(0, 1000, (args.batch_size_224,))
        classic = SwinTinyConfig(
            image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000, drop_path_rate=0.2
        )
        ours = SwinTinyForImageClassification(classic)
        candidates = [Candidate("swin_tiny_hf (sdpa)", ours, pixels, labels)]
        if compared:
            candidates.append(
                Candidate(
                    f"swin_tiny_hf at {args.compare_with} (sdpa)", same_model_from(compared, ours), pixels, labels
                )
            )
        candidates += [
            Candidate(
                "transformers SwinForImageClassification",
                SwinForImageClassification(SwinConfig(num_labels=1000, drop_path_rate=0.2)),
                pixels,
                labels,
            ),
            Candidate(
                "timm SwinTransformer (fused attn)",
                timm_swin(
                    True,
                    img_size=224,
                    embed_dim=96,
                    depths=(2, 2, 6, 2),
                    num_heads=(3, 6, 12, 24),
                    window_size=7,
                    num_classes=1000,
                    drop_path_rate=0.2,
                ),
                pixels,
                labels,
            ),
        ]
        run(candidates, args.repeats, machine, "224 px, classic Swin-T (28.3M params)")


if __name__ == "__main__":
    main()
