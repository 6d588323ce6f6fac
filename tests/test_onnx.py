"""ONNX export (torch.onnx, dynamo) with a dynamic batch, checked against PyTorch with onnxruntime; torch.export.

The command line (`python -m swin_tiny_hf.export_onnx`) runs in tests/test_readme.py, as the README gives it."""

import pytest
import torch

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.export_onnx import check_export, export_onnx

from conftest import perturbed, tiny_config

onnxruntime = pytest.importorskip("onnxruntime")


def onnx_logits(path, pixels):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"pixel_values": pixels.numpy()})[0])


@pytest.mark.parametrize(
    "config",
    [
        SwinTinyConfig(),  # the Tiny ImageNet model, 64 px
        SwinTinyConfig(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000),  # classic Swin-T
    ],
    ids=["64px_default", "224px_classic"],
)
def test_default_sdpa_model_exports_with_a_dynamic_batch(config, tmp_path):
    model = perturbed(SwinTinyForImageClassification(config))
    assert model.config._attn_implementation == "sdpa"  # as built by default: nothing switched by hand
    pixels = torch.randn(2, 3, config.image_size, config.image_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (pixels,),
            str(tmp_path / "model.onnx"),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes={"pixel_values": {0: batch}},
        )
    for size in (1, 3):  # batch sizes other than the exported one
        other = torch.randn(size, 3, config.image_size, config.image_size)
        with torch.no_grad():
            expected = model(other).logits
        difference = (onnx_logits(tmp_path / "model.onnx", other) - expected).abs().max()
        assert difference < 1e-4, (size, float(difference))


def test_torch_export_with_a_dynamic_batch_matches_eager(config):
    model = perturbed(SwinTinyForImageClassification(config))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (torch.randn(2, 3, 32, 32),), dynamic_shapes={"pixel_values": {0: batch}})
    exported = program.module()
    for size in (1, 5):
        pixels = torch.randn(size, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(exported(pixels).logits, model(pixels).logits, rtol=1e-5, atol=1e-5)


def test_a_mismatch_above_the_tolerance_is_an_error(tmp_path):
    model = perturbed(SwinTinyForImageClassification(tiny_config()))
    export_onnx(model, tmp_path / "model.onnx")
    assert check_export(model, tmp_path / "model.onnx") <= 1e-4
    other = SwinTinyForImageClassification(tiny_config()).eval()  # other weights: the file does not hold them
    with pytest.raises(ValueError, match="differ from PyTorch's by up to .* more than the allowed 0.0001"):
        check_export(other, tmp_path / "model.onnx")
