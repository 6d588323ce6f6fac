"""Saving, loading, Auto classes, remote code and the pipeline: everything offline, on a tiny model."""

import builtins
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    ImageClassificationPipeline,
    ViTImageProcessor,
    pipeline,
)

from swin_tiny_hf import (
    SwinTinyConfig,
    SwinTinyForImageClassification,
    SwinTinyModel,
    make_image_processor,
    save_model_and_processor,
)
from swin_tiny_hf.pipeline_swin_tiny import TASK, SwinTinyImageClassificationPipeline

from conftest import perturbed, run_without_the_package, tiny_config

LABELS = {0: "n01443537", 1: "n01629819", 2: "n01641577", 3: "n01644900", 4: "n01698640"}


@pytest.fixture
def saved(tmp_path):
    config = tiny_config(id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    model = perturbed(SwinTinyForImageClassification(config), 0.05)
    save_model_and_processor(model, tmp_path / "model")
    return model, tmp_path / "model"


def test_save_writes_weights_config_code_and_processor(saved):
    _, folder = saved
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= names
    assert {"configuration_swin_tiny.py", "modeling_swin_tiny.py", "windows.py"} <= names
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "swin_tiny"
    # every Auto class opens every folder we save (a classifier's trunk as AutoModel or AutoBackbone)
    assert config["auto_map"] == {
        "AutoConfig": "configuration_swin_tiny.SwinTinyConfig",
        "AutoModel": "modeling_swin_tiny.SwinTinyModel",
        "AutoModelForImageClassification": "modeling_swin_tiny.SwinTinyForImageClassification",
        "AutoBackbone": "modeling_swin_tiny.SwinTinyBackbone",
    }
    # derived buffers are not in the checkpoint
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "relative_position_index" in k or "shift_mask" in k]


def test_from_pretrained_gives_identical_logits_and_rebuilds_buffers(saved, pixel_values):
    model, folder = saved
    loaded = SwinTinyForImageClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)
    for (name, buffer), (_, reference) in zip(loaded.named_buffers(), model.named_buffers()):
        assert torch.equal(buffer, reference), name
    # the base model loads from the classification checkpoint (prefix "swin")
    backbone = SwinTinyModel.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(pixel_values).pooler_output, model.swin(pixel_values).pooler_output)


def test_a_folder_loaded_in_bf16_answers_the_processors_output_as_the_fp32_model(saved):
    """The bf16 serving path of the README: `from_pretrained(..., dtype=torch.bfloat16)`, then the processor's
    float32 pixels as they come (the model casts them), and the pipeline. The top class is fp32's, the logits
    within bf16's rounding."""
    model, folder = saved
    loaded = AutoModelForImageClassification.from_pretrained(folder, dtype=torch.bfloat16).eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    processor = AutoImageProcessor.from_pretrained(folder)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.dtype == torch.float32
    with torch.no_grad():
        expected = model.eval()(pixels).logits
        logits = loaded(pixels).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), expected, atol=0.05, rtol=0.05)
    assert logits.argmax(-1).item() == expected.argmax(-1).item()
    best = SwinTinyImageClassificationPipeline(model=loaded, image_processor=processor)(image, top_k=1)[0]
    assert best["label"] == LABELS[expected.argmax(-1).item()]


def test_auto_classes(saved, pixel_values):
    model, folder = saved
    assert isinstance(AutoConfig.from_pretrained(folder), SwinTinyConfig)
    auto = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(auto) is SwinTinyForImageClassification
    with torch.no_grad():
        torch.testing.assert_close(auto(pixel_values).logits, model(pixel_values).logits)
    assert type(AutoModel.from_config(tiny_config())) is SwinTinyModel
    assert type(AutoModelForImageClassification.from_config(tiny_config())) is SwinTinyForImageClassification
    assert isinstance(AutoConfig.for_model("swin_tiny"), SwinTinyConfig)


def test_remote_code_loads_where_the_package_cannot_be_imported(saved, pixel_values, tmp_path):
    model, folder = saved
    torch.save(pixel_values, tmp_path / "pixels.pt")
    with torch.no_grad():
        torch.save(model(pixel_values).logits, tmp_path / "expected.pt")
    script = f"""
import torch
from transformers import AutoModelForImageClassification, AutoConfig
try:
    import swin_tiny_hf
    raise SystemExit("package still importable")
except ImportError:
    pass
model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / "pixels.pt")!r})).logits
torch.testing.assert_close(logits, torch.load({str(tmp_path / "expected.pt")!r}))
print("REMOTE_OK", type(model).__name__)
"""
    stdout = run_without_the_package(script, tmp_path)
    assert "REMOTE_OK SwinTinyForImageClassification" in stdout


def _images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    return {
        "rgb_odd_size": rgb,
        "grayscale": Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8), mode="L"),
        "rgba": Image.fromarray(rng.integers(0, 255, (20, 90, 4), dtype=np.uint8), mode="RGBA"),
        "palette": rgb.convert("P"),
    }


def test_processor_and_pipeline_on_odd_images(saved, monkeypatch):
    """The plain pipeline call (no trust_remote_code: the package is installed) on RGB, grayscale, RGBA and
    palette images gives the model's own prediction on the processor's pixels."""
    model, folder = saved
    processor = AutoImageProcessor.from_pretrained(folder)
    assert isinstance(processor, ViTImageProcessor)
    assert processor.size == {"height": 32, "width": 32}
    assert processor.image_mean == pytest.approx([0.4802, 0.4481, 0.3975])
    assert processor.image_std == pytest.approx([0.2296, 0.2263, 0.2255])
    asked = []  # transformers would ask on the terminal before running remote code: it must not ask here
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    classifier = pipeline("image-classification", model=str(folder), top_k=5)
    assert type(classifier) is ImageClassificationPipeline and type(classifier.image_processor) is type(processor)
    for name, image in _images().items():
        pixels = processor(image, return_tensors="pt")["pixel_values"]
        assert pixels.shape == (1, 3, 32, 32), name
        # one rule for transparency, training's: alpha dropped, the stored colour kept (as convert("RGB"))
        assert torch.equal(pixels, processor(image.convert("RGB"), return_tensors="pt")["pixel_values"]), name
        predictions = classifier(image)
        assert [p["label"] for p in predictions] and {p["label"] for p in predictions} == set(LABELS.values()), name
        with torch.no_grad():
            probabilities = model(pixels).logits.softmax(-1)[0]
        best = int(probabilities.argmax())
        assert predictions[0]["label"] == LABELS[best], name
        assert predictions[0]["score"] == pytest.approx(float(probabilities[best]), abs=1e-5), name
    assert not asked, asked


def test_the_folders_own_pipeline_is_its_own_task(saved, monkeypatch):
    """Issue 21, item 3: config.json's custom_pipelines named "image-classification" made transformers refuse the
    plain call without trust_remote_code. The folder's own pipeline is now its own task; the plain call is
    transformers' pipeline (above), and the own one is reached by its task with trust_remote_code=True, or by
    pipeline_class= without remote code."""
    _, folder = saved
    assert list(json.loads((folder / "config.json").read_text())["custom_pipelines"]) == [TASK]
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    plain = pipeline("image-classification", model=str(folder), top_k=5)
    by_class = pipeline("image-classification", model=str(folder), pipeline_class=SwinTinyImageClassificationPipeline)
    assert type(by_class) is SwinTinyImageClassificationPipeline
    remote = pipeline(TASK, model=str(folder), trust_remote_code=True, top_k=5)
    assert type(remote).__name__ == "SwinTinyImageClassificationPipeline"
    assert type(remote).__module__.startswith("transformers_modules"), type(remote).__module__
    expected = plain(image)
    for classify in (by_class, remote):
        assert classify(image, top_k=5) == expected
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # transformers' rule for a task config.json names
        pipeline(TASK, model=str(folder))
    assert not asked, asked


def test_make_image_processor_normalises_like_the_reference():
    processor = make_image_processor(64)
    image = Image.new("RGB", (64, 64), (255, 0, 128))
    pixels = processor(image, return_tensors="pt")["pixel_values"][0, :, 0, 0]
    expected = (torch.tensor([255, 0, 128]) / 255 - torch.tensor([0.4802, 0.4481, 0.3975])) / torch.tensor(
        [0.2296, 0.2263, 0.2255]
    )
    torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="image_size must be positive"):
        make_image_processor(0)
