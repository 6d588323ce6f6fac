"""Export a saved image classifier to ONNX with a dynamic batch, and check it against PyTorch.

    python -m swin_tiny_hf.export_onnx --model DIR --output FILE [--atol 1e-4] [--opset 18]

The export is `torch.onnx.export(..., dynamo=True)` (torch.export underneath) with the batch
dimension dynamic; the graph takes `pixel_values` (batch, channels, image_size, image_size) and
returns `logits` (batch, num_labels). After writing the file the command runs it once with
onnxruntime on random pixels, at a batch size other than the one exported with, prints the largest
absolute difference from the PyTorch logits, and fails if it is above `--atol`.

While exporting, the model runs its attention as explicit matmul + softmax and its linears as plain
matrix products (see `modeling_swin_tiny.py`): the same arithmetic as the fused kernels, in the
portable ops that ONNX has and that survive torch.onnx's decomposition pass.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

EXPORT_BATCH = 2  # the example batch the graph is traced with; checks run at other sizes
CHECK_BATCH = 3


class LogitsOnly(nn.Module):
    """The classifier with one tensor output, so that the ONNX graph has a single output named `logits`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits  # (B, num_labels)


def example_pixels(config, batch: int, seed: int = 0) -> torch.Tensor:
    """Random normalised pixels (batch, channels, image_size, image_size)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=generator)


def export_onnx(model: nn.Module, path: str | Path, opset_version: int | None = None) -> Path:
    """Write `model` (an image classifier in eval mode) to `path` as ONNX with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(model).eval(),
            (example_pixels(model.config, EXPORT_BATCH),),
            str(path),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: batch}},
            opset_version=opset_version,
            external_data=False,
        )
    return path


def onnx_max_difference(model: nn.Module, path: str | Path, batch: int = CHECK_BATCH) -> float:
    """Largest |logits_onnxruntime - logits_pytorch| on random pixels at `batch` (CPU execution provider)."""
    import onnxruntime

    pixels = example_pixels(model.config, batch, seed=1)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        torch_logits = model.eval()(pixel_values=pixels).logits
    return float((torch.from_numpy(onnx_logits) - torch_logits).abs().max())


def check_export(model: nn.Module, path: str | Path, atol: float = 1e-4, batch: int = CHECK_BATCH) -> float:
    """Run the file against the model; raise a ValueError if they differ by more than `atol`."""
    difference = onnx_max_difference(model, path, batch)
    if not difference <= atol:  # also catches NaN
        raise ValueError(
            f"{path}: onnxruntime's logits differ from PyTorch's by up to {difference:.3g} at batch {batch}, "
            f"more than the allowed {atol:g}."
        )
    return difference


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a save_pretrained folder of an image classifier")
    parser.add_argument("--output", required=True, help="the .onnx file to write")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference from PyTorch")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch.onnx's)")
    return parser


def main(argv: list[str] | None = None) -> float:
    args = get_args_parser().parse_args(argv)
    from transformers import AutoModelForImageClassification

    # importing this package registered swin_tiny with the Auto classes
    model = AutoModelForImageClassification.from_pretrained(args.model).eval()
    path = export_onnx(model, args.output, args.opset)
    difference = check_export(model, path, args.atol)
    size = path.stat().st_size / 2**20
    print(
        f"wrote {path} ({size:.1f} MiB, dynamic batch); onnxruntime vs PyTorch at batch {CHECK_BATCH}: "
        f"max |difference| {difference:.3g} (allowed {args.atol:g})"
    )
    return difference


if __name__ == "__main__":
    main()
