"""ONNX export (torch.onnx, dynamo) with a dynamic batch, checked against PyTorch with onnxruntime; torch.export;
the command on half-precision folders, folders without a classifier and another library's classifier.

The command line (`python -m swin_tiny_hf.export_onnx`) runs in tests/test_readme.py, as the README gives it."""

import json

import pytest
import torch

from swin_tiny_hf import SwinTinyBackbone, SwinTinyConfig, SwinTinyForImageClassification, SwinTinyModel
from swin_tiny_hf.export_onnx import check_export, export_onnx, main

from conftest import perturbed, tiny_config

onnxruntime = pytest.importorskip("onnxruntime")


def onnx_logits(path, pixels):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"pixel_values": pixels.numpy()})[0])


@pytest.mark.parametrize(
    "config",
    [
        SwinTinyConfig(),  # the Tiny ImageNet model, 64 px
        # the classic Swin-T's geometry (224 px, window 7; the last stage's 7x7 map one unshifted window), two blocks a
        # stage: an export's time grows with the blocks, and stage 3's six repeat one W-MSA/SW-MSA pair
        SwinTinyConfig(image_size=224, depths=[2, 2, 2, 2], num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000),
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


def save_tiny(model, folder, dtype=torch.float32):
    perturbed(model).to(dtype).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_folder_exports_in_float32(dtype, tmp_path, capsys):
    folder = save_tiny(SwinTinyForImageClassification(tiny_config()), tmp_path / "half", dtype)
    difference = main(["--model", str(folder), "--output", str(tmp_path / "model.onnx")])
    log = capsys.readouterr().out
    assert f"saved in {str(dtype).removeprefix('torch.')}, exported in float32" in log and difference <= 1e-4
    # the graph holds the folder's weights exactly, upcast: it matches them run in float32 (tolerance 1e-4)
    saved = SwinTinyForImageClassification.from_pretrained(folder, dtype=torch.float32).eval()
    assert next(saved.parameters()).dtype == torch.float32
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = saved(pixels).logits
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(onnx_logits(tmp_path / "model.onnx", pixels), expected, atol=1e-4, rtol=0)


def test_export_onnx_refuses_a_half_precision_or_headless_model_in_memory(tmp_path):
    model = perturbed(SwinTinyForImageClassification(tiny_config())).to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"has bfloat16 parameters.*pass model\.float\(\)"):
        export_onnx(model, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=r"SwinTinyModel returns BaseModelOutputWithPooling without logits"):
        export_onnx(SwinTinyModel(tiny_config()), tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_folders_without_a_classifier_are_refused_by_name(tmp_path):
    output = str(tmp_path / "model.onnx")
    save_tiny(SwinTinyModel(tiny_config()), tmp_path / "base")
    with pytest.raises(ValueError, match=r"holds a SwinTinyModel \(model_type 'swin_tiny'\), not an image classifier"):
        main(["--model", str(tmp_path / "base"), "--output", output])
    save_tiny(SwinTinyBackbone(tiny_config()), tmp_path / "backbone")
    with pytest.raises(ValueError, match=r"holds a SwinTinyBackbone .*, not an image classifier"):
        main(["--model", str(tmp_path / "backbone"), "--output", output])
    # a config without `architectures`: the missing head is found among the weights
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    del config["architectures"]
    (tmp_path / "base" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"weights lack classifier\.bias, classifier\.weight of "
        r"SwinTinyForImageClassification; exporting would write randomly",
    ):
        main(["--model", str(tmp_path / "base"), "--output", output])
    with pytest.raises(ValueError, match=r"'.*nowhere' is not a folder; expected a save_pretrained folder"):
        main(["--model", str(tmp_path / "nowhere"), "--output", output])
    (tmp_path / "weights_only").mkdir()
    (tmp_path / "weights_only" / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"has no config\.json.*\['model\.safetensors'\]"):
        main(["--model", str(tmp_path / "weights_only"), "--output", output])
    assert not (tmp_path / "model.onnx").exists()


def test_transformers_own_classifier_exports_with_a_note(tmp_path, capsys):
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(
        image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4, num_labels=3
    )
    folder = save_tiny(SwinForImageClassification(config), tmp_path / "hf")
    difference = main(["--model", str(folder), "--output", str(tmp_path / "model.onnx")])
    assert "SwinForImageClassification; model_type 'swin', not swin_tiny" in capsys.readouterr().out
    assert difference <= 1e-4


def test_a_folder_fine_tuned_at_another_size_exports_at_its_processor_size(tmp_path, capsys):
    """config.image_size 32, but the folder's processor gives 64 px: the graph takes what the processor gives."""
    import numpy as np
    import PIL.Image

    from swin_tiny_hf import SwinTinyImageProcessor

    model = perturbed(SwinTinyForImageClassification(tiny_config())).eval()
    folder = save_tiny(model, tmp_path / "fine_tuned")
    SwinTinyImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    difference = main(["--model", str(folder), "--output", str(tmp_path / "model.onnx")])
    assert "input 64x64, the folder's processor size (config.image_size: 32)" in capsys.readouterr().out
    assert difference <= 1e-4
    image = PIL.Image.fromarray((np.random.RandomState(0).rand(50, 70, 3) * 255).astype("uint8"))
    pixels = SwinTinyImageProcessor.from_pretrained(folder)(image, return_tensors="pt").pixel_values  # (1, 3, 64, 64)
    saved = SwinTinyForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = saved(pixels).logits
    torch.testing.assert_close(onnx_logits(tmp_path / "model.onnx", pixels), expected, atol=1e-4, rtol=0)
