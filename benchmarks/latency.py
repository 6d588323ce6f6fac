"""Serving latency on this CPU: one request of 1 or 8 images, swin_tiny_hf against timm and against onnxruntime
running our own ONNX export, in one process.

    python benchmarks/latency.py [--batches 1 8] [--requests 200] [--rounds 5] [--threads N]

Every candidate answers the same requests (random 64 px pixels, the default Tiny ImageNet config, random weights),
interleaved round by round so that drift on the machine hits all alike. A request is timed alone: eval mode, no
grad, one call. Printed per batch size: the median and 90th percentile of the request latencies (over all rounds),
the spread of the per-round medians (min-max), and the images/s of the median.

Candidates:
- swin_tiny_hf in PyTorch, fp32 (sdpa); and, where the CPU computes bf16 natively, under bf16 autocast and with its
  weights in bf16 (`from_pretrained(..., dtype=torch.bfloat16)`; the processor's float32 pixels cast in the request);
- timm's SwinTransformer at the same config, default and fused attention (fp32), bf16 autocast and bf16 weights
  (fused);
- onnxruntime (CPU execution provider, all graph optimisations, intra-op threads as torch's) on the graph that
  `python -m swin_tiny_hf.export_onnx` writes, fp32;
- with `--compiled`: swin_tiny_hf in fp32 and in bf16 weights, and timm (fused) in bf16 weights, compiled by inductor
  with their weights frozen (`swin_tiny_hf.compile_frozen`, one static graph per batch size: `dynamic=False`). Their
  first request of each batch size compiles, in the warm-up; its time is printed.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.convert import timm_swin_kwargs
from swin_tiny_hf.export_onnx import export_onnx
from swin_tiny_hf.frozen_compile import compile_frozen

try:  # run as a script (benchmarks/ on sys.path) or as a module
    from model_throughput import add_malloc_flag, malloc_as_asked, timm_swin
    from profile_ops import cpu_name
except ImportError:  # pragma: no cover
    from benchmarks.model_throughput import add_malloc_flag, malloc_as_asked, timm_swin
    from benchmarks.profile_ops import cpu_name


def torch_runner(model, bf16: bool):
    model.eval()

    def run(pixels: torch.Tensor) -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(pixels)

    return run


def bf16_weights_runner(model):
    """A bf16 copy of `model`, answering the processor's float32 pixels: the cast is part of the request."""
    model = copy.deepcopy(model).to(torch.bfloat16).eval()

    def run(pixels: torch.Tensor) -> None:
        with torch.no_grad():
            model(pixels.to(torch.bfloat16))

    return run


def frozen_runner(model, bf16: bool):
    """`compile_frozen` of a copy of `model`, in bf16 weights if asked (the pixels cast in the request, as above)."""
    model = copy.deepcopy(model).to(torch.bfloat16 if bf16 else torch.float32)
    serve = compile_frozen(model, dynamic=False)

    def run(pixels: torch.Tensor) -> None:
        serve(pixels.to(torch.bfloat16) if bf16 else pixels)

    return run


def onnxruntime_runner(model, folder: Path, threads: int):
    import onnxruntime

    path = export_onnx(model, folder / "model.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(pixels: torch.Tensor) -> None:
        session.run(["logits"], {"pixel_values": pixels.numpy()})

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=200, help="requests per candidate and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip_bf16", action="store_true")
    parser.add_argument("--compiled", action="store_true", help="add inductor-compiled candidates, weights frozen")
    add_malloc_flag(parser)
    args = parser.parse_args()
    malloc = malloc_as_asked(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = SwinTinyConfig()
    ours = SwinTinyForImageClassification(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        candidates = {"swin_tiny_hf (PyTorch, fp32)": torch_runner(ours, False)}
        timm_kwargs = timm_swin_kwargs(config)
        timm_default = timm_swin(False, **timm_kwargs)  # their own random weights: the same work
        timm_fused = timm_swin(True, **timm_kwargs)
        candidates["timm SwinTransformer (fp32)"] = torch_runner(timm_default, False)
        candidates["timm SwinTransformer (fused attn) (fp32)"] = torch_runner(timm_fused, False)
        candidates["swin_tiny_hf (onnxruntime, fp32)"] = onnxruntime_runner(ours, Path(folder), args.threads)
        if not args.skip_bf16:
            candidates["swin_tiny_hf (PyTorch, bf16 autocast)"] = torch_runner(ours, True)
            candidates["swin_tiny_hf (PyTorch, bf16 weights)"] = bf16_weights_runner(ours)
            candidates["timm SwinTransformer (fused attn, bf16 autocast)"] = torch_runner(timm_fused, True)
            candidates["timm SwinTransformer (fused attn, bf16 weights)"] = bf16_weights_runner(timm_fused)
        if args.compiled:
            candidates["swin_tiny_hf (compiled frozen, fp32)"] = frozen_runner(ours, False)
            if not args.skip_bf16:
                candidates["swin_tiny_hf (compiled frozen, bf16 weights)"] = frozen_runner(ours, True)
                candidates["timm SwinTransformer (fused attn, compiled frozen, bf16 weights)"] = frozen_runner(
                    timm_fused, True
                )
        print(f"CPU: {cpu_name()}; torch {torch.__version__}; malloc: {malloc}")
        for batch in args.batches:
            pixels = torch.randn(batch, 3, config.image_size, config.image_size)
            times = {name: [] for name in candidates}
            medians = {name: [] for name in candidates}
            for name, run in candidates.items():  # warm-up: oneDNN primitives, onnxruntime's first run, compiling
                start = time.perf_counter()
                run(pixels)
                if "compiled" in name:
                    print(f"{name}: first request of batch {batch} (compiling) {time.perf_counter() - start:.1f} s")
                for _ in range(4):
                    run(pixels)
            for _ in range(args.rounds):
                for name, run in candidates.items():
                    this_round = []
                    for _ in range(args.requests):
                        start = time.perf_counter()
                        run(pixels)
                        this_round.append(time.perf_counter() - start)
                    times[name] += this_round
                    medians[name].append(statistics.median(this_round))
            print(f"\n### batch {batch} ({args.rounds} rounds of {args.requests} requests, {args.threads} threads)")
            print("| candidate | median ms | p90 ms | round medians, min-max ms | images/s | vs ours (PyTorch fp32) |")
            print("| --- | --- | --- | --- | --- | --- |")
            ours_median = statistics.median(times["swin_tiny_hf (PyTorch, fp32)"])
            for name, measured in times.items():
                median = statistics.median(measured)
                p90 = statistics.quantiles(measured, n=10)[-1]
                print(
                    f"| {name} | {1000 * median:.2f} | {1000 * p90:.2f} | {1000 * min(medians[name]):.2f}-"
                    f"{1000 * max(medians[name]):.2f} | {batch / median:.0f} | x{ours_median / median:.2f} |"
                )
            print("('vs ours': our PyTorch fp32 median over this row's; above 1, this row answers faster.)")


if __name__ == "__main__":
    main()
