"""Export a saved image classifier to ONNX with a dynamic batch, and check it against PyTorch.

    python -m swin_tiny_hf.export_onnx --model DIR --output FILE [--atol 1e-4] [--opset 18]

The folder must hold an image classifier (`architectures` in its config.json ending in ForImageClassification,
every weight present): a base model or a backbone has no `logits` to export, and is refused by name. The graph
is always float32: a folder saved in bfloat16 or float16 is upcast (exactly) and the log says so, because
onnxruntime's CPU kernels lack most half-precision ops. A classifier other than swin_tiny's (transformers' own
Swin, say) is exported through its own code and checked the same way, with a note that says so.

The export is `torch.onnx.export(..., dynamo=True)` (torch.export underneath) with the batch
dimension dynamic; the graph takes `pixel_values` (batch, channels, height, width) and
returns `logits` (batch, num_labels). Height and width are what the folder's own image processor gives
(`size` in its preprocessor_config.json, which a model fine-tuned at another resolution keeps), else
config.image_size; the log says which. After writing the file the command runs it once with
onnxruntime on random pixels, at a batch size other than the one exported with, prints the largest
absolute difference from the PyTorch logits, and fails if it is above `--atol`.

While exporting, the model runs its attention as explicit matmul + softmax and its linears as plain
matrix products (see `modeling_swin_tiny.py`): the same arithmetic as the fused kernels, in the
portable ops that ONNX has and that survive torch.onnx's decomposition pass.
"""

from __future__ import annotations

import argparse
import json
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


def example_pixels(config, batch: int, seed: int = 0, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Random normalised pixels (batch, channels, height, width): `size` (height, width), else
    config.image_size square."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size or (config.image_size, config.image_size)
    return torch.randn(batch, config.num_channels, height, width, generator=generator)


def processor_size(folder: str | Path) -> tuple[int, int] | None:
    """(height, width) that the folder's saved image processor resizes to (preprocessor_config.json `size` with
    height and width, under do_resize); None where it has none, or a size that does not fix both sides."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return None
    processor = json.loads(path.read_text())
    size = processor.get("size") or {}
    if not processor.get("do_resize", True) or not isinstance(size, dict) or not {"height", "width"} <= set(size):
        return None
    return int(size["height"]), int(size["width"])


def check_exportable(model: nn.Module) -> None:
    """Raise a ValueError unless `model` is a float32 classifier: one that returns `logits` for float32 pixels."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    if dtypes != ["float32"]:
        raise ValueError(
            f"{type(model).__name__} has {', '.join(dtypes)} parameters; the ONNX export and its check run in "
            f"float32: pass model.float() (the command line upcasts a half-precision folder itself)."
        )
    with torch.no_grad():
        output = model.eval()(pixel_values=example_pixels(model.config, 1))
    if getattr(output, "logits", None) is None:
        raise ValueError(
            f"{type(model).__name__} returns {type(output).__name__} without logits: export_onnx exports image "
            f"classifiers (e.g. SwinTinyForImageClassification)."
        )


def export_onnx(
    model: nn.Module, path: str | Path, opset_version: int | None = None, size: tuple[int, int] | None = None
) -> Path:
    """Write `model` (a float32 image classifier) to `path` as ONNX with a dynamic batch dimension, traced at
    `size` (height, width), else config.image_size."""
    check_exportable(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(model).eval(),
            (example_pixels(model.config, EXPORT_BATCH, size=size),),
            str(path),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: batch}},
            opset_version=opset_version,
            external_data=False,
        )
    return path


def onnx_max_difference(
    model: nn.Module, path: str | Path, batch: int = CHECK_BATCH, size: tuple[int, int] | None = None
) -> float:
    """Largest |logits_onnxruntime - logits_pytorch| on random pixels at `batch` and `size` (height, width; else
    config.image_size), on onnxruntime's CPU execution provider."""
    import onnxruntime

    pixels = example_pixels(model.config, batch, seed=1, size=size)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"pixel_values": pixels.numpy()})
    with torch.no_grad():
        torch_logits = model.eval()(pixel_values=pixels).logits
    return float((torch.from_numpy(onnx_logits) - torch_logits).abs().max())


def check_export(
    model: nn.Module,
    path: str | Path,
    atol: float = 1e-4,
    batch: int = CHECK_BATCH,
    size: tuple[int, int] | None = None,
) -> float:
    """Run the file against the model at `size` (height, width; else config.image_size); raise a ValueError if
    they differ by more than `atol`."""
    check_exportable(model)
    difference = onnx_max_difference(model, path, batch, size)
    if not difference <= atol:  # also catches NaN
        raise ValueError(
            f"{path}: onnxruntime's logits differ from PyTorch's by up to {difference:.3g} at batch {batch}, "
            f"more than the allowed {atol:g}."
        )
    return difference


def load_classifier(folder: str | Path) -> tuple[nn.Module, str]:
    """The image classifier saved in `folder`, in float32 and eval mode, and a note for the log (its class, and
    the dtype it was saved in when that was not float32).

    Raises a ValueError naming what is wrong: no such folder, no config.json, a model that is not an image
    classifier (its class named), or weights missing from the folder (a head that would be random)."""
    from transformers import AutoModelForImageClassification

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"--model {str(folder)!r} is not a folder; expected a save_pretrained folder of an image "
            f"classifier (config.json and weights)."
        )
    if not (folder / "config.json").is_file():
        contents = sorted(p.name for p in folder.iterdir())[:6]
        raise ValueError(
            f"--model {str(folder)!r} has no config.json, so it is not a save_pretrained folder "
            f"(it holds {contents or 'nothing'})."
        )
    config = json.loads((folder / "config.json").read_text())
    model_type, architectures = config.get("model_type"), config.get("architectures") or []
    if architectures and not any(name.endswith("ForImageClassification") for name in architectures):
        raise ValueError(
            f"--model {str(folder)!r} holds a {architectures[0]} (model_type {model_type!r}), not an image "
            f"classifier: it has no classification head and no logits to export. Fine-tune a classifier on it "
            f"(e.g. SwinTinyForImageClassification.from_pretrained(folder, num_labels=...)) and export that."
        )
    # importing this package registered swin_tiny with the Auto classes
    model, loading = AutoModelForImageClassification.from_pretrained(folder, output_loading_info=True)
    missing = sorted(set(loading["missing_keys"]) | {key for key, *_ in loading["mismatched_keys"]})
    if missing:
        raise ValueError(
            f"--model {str(folder)!r}: its weights lack {', '.join(missing[:6])} of "
            f"{type(model).__name__}; exporting would write randomly initialised values. Save the whole "
            f"classifier (model.save_pretrained) and export that folder."
        )
    notes = [f"{type(model).__name__}"]
    if model_type != "swin_tiny":
        notes.append(f"model_type {model_type!r}, not swin_tiny: exported through its own code, checked the same way")
    saved_dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    if saved_dtypes != ["float32"]:
        notes.append(f"saved in {', '.join(saved_dtypes)}, exported in float32 (upcast exactly)")
    return model.float().eval(), "; ".join(notes)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a save_pretrained folder of an image classifier")
    parser.add_argument("--output", required=True, help="the .onnx file to write (always float32)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed difference from PyTorch")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch.onnx's)")
    return parser


def main(argv: list[str] | None = None) -> float:
    args = get_args_parser().parse_args(argv)
    model, note = load_classifier(args.model)
    size = processor_size(args.model)
    if size is None:
        size = (model.config.image_size, model.config.image_size)
        note += f"; input {size[0]}x{size[1]} (config.image_size; no fixed processor size in the folder)"
    else:
        config_size = model.config.image_size
        note += f"; input {size[0]}x{size[1]}, the folder's processor size (config.image_size: {config_size})"
    try:
        path = export_onnx(model, args.output, args.opset, size)
        difference = check_export(model, path, args.atol, size=size)
    except Exception as error:  # say which model failed (another library's, say) under the exporter's own words
        error.add_note(f"while exporting {args.model}: {note}")
        raise
    size = path.stat().st_size / 2**20
    print(
        f"wrote {path} ({size:.1f} MiB, float32, dynamic batch; {note}); onnxruntime vs PyTorch at batch "
        f"{CHECK_BATCH}: max |difference| {difference:.3g} (allowed {args.atol:g})"
    )
    return difference


if __name__ == "__main__":
    main()
