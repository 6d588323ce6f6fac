"""Checkpoint layouts at the converter's edges, on tiny configs: Microsoft's original layout (checked against timm's
own reading of it, `checkpoint_filter_fn`), headless checkpoints (-> SwinTinyModel), class names kept from the
checkpoint's config, unknown or mixed layouts refused by name; through the functions and the CLI alike."""

import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swin_tiny_hf import SwinTinyForImageClassification, SwinTinyModel
from swin_tiny_hf.convert import (
    config_from_state_dict,
    convert_state_dict,
    detect_layout,
    label_names_from_config,
    main,
    model_from_state_dict,
    timm_swin_kwargs,
)

from conftest import perturbed, tiny_config

timm = pytest.importorskip("timm")
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn  # noqa: E402

ATOL = 1e-5  # fp32, the same arithmetic in another order; logits are O(1) (asserted)


def timm_swin(config, num_classes=None):
    kwargs = timm_swin_kwargs(config)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return perturbed(SwinTransformer(**kwargs), scale=0.2)


def microsoft_layout(timm_model) -> dict:
    """timm's weights in the official Swin repository's layout, as its training script saves them: the patch
    merging of timm's stage i (its start) at the end of stage i-1, `head` for `head.fc`, the derived buffers
    (`relative_position_index`, `attn_mask`) included, all under a "model" key."""
    original = {}
    for key, tensor in timm_model.state_dict().items():
        key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        original[key.replace("head.fc.", "head.")] = tensor
    original.update(dict(timm_model.named_buffers()))  # same names in both layouts
    return {"model": original, "epoch": 300}


def images(config, batch=2):
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, config.num_channels, config.image_size, config.image_size, generator=generator)


def test_microsoft_layout_is_what_timm_reads_and_gives_timms_logits():
    config = tiny_config()
    timm_model = timm_swin(config)
    checkpoint = microsoft_layout(timm_model)
    assert "layers.0.downsample.reduction.weight" in checkpoint["model"] and "head.weight" in checkpoint["model"]
    # our inversion is the layout timm's own filter converts: it gives back timm's state dict exactly
    filtered = checkpoint_filter_fn(checkpoint, timm_model)
    assert filtered.keys() == timm_model.state_dict().keys()
    assert all(torch.equal(filtered[k], v) for k, v in timm_model.state_dict().items())
    reference = SwinTransformer(**timm_swin_kwargs(config)).eval()
    reference.load_state_dict(filtered)
    assert detect_layout(checkpoint["model"]) == "microsoft"
    for source in ("auto", "microsoft"):
        model = model_from_state_dict(convert_state_dict(checkpoint, source), image_size=32)
        with torch.no_grad():
            expected = reference(images(config))
            assert expected.abs().max() > 0.5
            torch.testing.assert_close(model(images(config)).logits, expected, atol=ATOL, rtol=0)
    # the patch mergings land at the end of stages 0 and 1, as Microsoft's (not at -1 and 0)
    converted = convert_state_dict(checkpoint)
    assert {k.split(".")[2] for k in converted if ".downsample." in k} == {"0", "1"}


def test_microsoft_layout_named_as_timm_is_refused_naming_the_layout():
    checkpoint = microsoft_layout(timm_swin(tiny_config()))
    with pytest.raises(ValueError, match=r"source='timm', but the checkpoint is in the microsoft layout .*head"):
        convert_state_dict(checkpoint, "timm")
    timm_checkpoint = timm_swin(tiny_config()).state_dict()
    with pytest.raises(ValueError, match=r"source='microsoft', but the checkpoint is in the timm layout"):
        convert_state_dict(timm_checkpoint, "microsoft")


@settings(max_examples=6, deadline=None)
@given(
    depths=st.lists(st.integers(1, 2), min_size=1, max_size=3),
    window=st.sampled_from([2, 4]),
    headless=st.booleans(),
    layout=st.sampled_from(["timm", "microsoft"]),
)
def test_any_tiny_architecture_converts_from_either_layout(depths, window, headless, layout):
    config = tiny_config(depths=depths, num_heads=[1, 2, 4][: len(depths)], window_size=window)
    timm_model = timm_swin(config, num_classes=0 if headless else None)
    checkpoint = microsoft_layout(timm_model) if layout == "microsoft" else timm_model.state_dict()
    model = model_from_state_dict(convert_state_dict(checkpoint), image_size=32)
    assert isinstance(model, SwinTinyModel if headless else SwinTinyForImageClassification)
    assert (model.config.depths, model.config.window_size) == (depths, [window] * len(depths))
    with torch.no_grad():
        if headless:  # timm's pooled features, before its (absent) head
            expected = timm_model.forward_head(timm_model.forward_features(images(config)), pre_logits=True)
            actual = model(images(config)).pooler_output
        else:
            expected, actual = timm_model(images(config)), model(images(config)).logits
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def test_headless_timm_checkpoint_converts_to_a_base_model_through_the_cli(tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModel

    config = tiny_config()
    timm_model = timm_swin(config, num_classes=0)
    save_file(timm_model.state_dict(), tmp_path / "headless.safetensors")
    argv = ["--checkpoint", str(tmp_path / "headless.safetensors"), "--output_dir", str(tmp_path / "out")]
    main([*argv, "--image_size", "32"])
    loaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert isinstance(loaded, SwinTinyModel)
    with torch.no_grad():
        expected = timm_model.forward_head(timm_model.forward_features(images(config)), pre_logits=True)
        torch.testing.assert_close(loaded(images(config)).pooler_output, expected, atol=ATOL, rtol=0)
    # fine-tuning it: a classifier with a new head on the converted trunk
    classifier = SwinTinyForImageClassification.from_pretrained(tmp_path / "out", num_labels=3)
    torch.testing.assert_close(classifier.swin.norm.weight, loaded.norm.weight)


def test_headless_transformers_checkpoint_converts_to_a_base_model():
    from transformers import SwinConfig, SwinModel

    reference = perturbed(
        SwinModel(
            SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4)
        ),
        scale=0.2,
    )
    model = model_from_state_dict(convert_state_dict(reference.state_dict()), image_size=32)
    assert isinstance(model, SwinTinyModel)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).pooler_output, reference(pixels).pooler_output, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="no classification head .* base model"):
        config_from_state_dict(convert_state_dict(reference.state_dict()), id2label={0: "cat"})


def test_transformers_class_names_are_kept_from_a_saved_folder(tmp_path):
    from transformers import SwinConfig, SwinForImageClassification

    names = {0: "cat", 1: "dog", 2: "bird"}
    reference = perturbed(
        SwinForImageClassification(
            SwinConfig(
                image_size=32,
                patch_size=2,
                embed_dim=16,
                depths=[2, 2],
                num_heads=[1, 2],
                window_size=4,
                id2label=names,
                label2id={v: k for k, v in names.items()},
            )
        ),
        scale=0.2,
    )
    reference.save_pretrained(tmp_path / "hf")
    assert label_names_from_config(reference.config.to_dict()) == names
    for checkpoint in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):  # the folder, or its weights file
        model = main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "out"), "--image_size", "32"])
        assert model.config.id2label == names
        loaded = SwinTinyForImageClassification.from_pretrained(tmp_path / "out").eval()
        assert loaded.config.id2label == names and loaded.config.label2id == {"cat": 0, "dog": 1, "bird": 2}
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            torch.testing.assert_close(loaded(pixels).logits, reference(pixels).logits, atol=ATOL, rtol=0)
    # transformers' placeholders name nothing
    assert label_names_from_config(SwinConfig(num_labels=3).to_dict()) is None


def test_timm_label_names_are_kept(tmp_path):
    from timm.models import save_for_hf

    config = tiny_config(num_labels=3)
    kwargs = timm_swin_kwargs(config)
    # create_model, not the class: timm's hub format writes the model's pretrained_cfg
    timm_model = perturbed(timm.create_model("swin_tiny_patch4_window7_224", **kwargs), scale=0.2)
    save_for_hf(
        timm_model,
        tmp_path / "hub",
        model_config={"label_names": ["n01443537", "apple", "pear"]},
        safe_serialization=True,
    )
    hub_config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert hub_config["label_names"] == ["n01443537", "apple", "pear"]
    model = main(["--checkpoint", str(tmp_path / "hub"), "--output_dir", str(tmp_path / "out"), "--image_size", "32"])
    # a WordNet id gets its readable name, the ids kept beside
    assert model.config.id2label == {0: "goldfish", 1: "apple", 2: "pear"}
    assert model.config.wordnet_ids == ["n01443537", "apple", "pear"]
    # a timm model's own pretrained_cfg, in memory
    assert label_names_from_config({"label_names": ("a", "b", "c"), "num_classes": 3}) == {0: "a", 1: "b", 2: "c"}
    with pytest.raises(ValueError, match=r"id2label names classes 0, 1.*head has 3 classes"):
        config_from_state_dict(convert_state_dict(timm_model.state_dict()), id2label={0: "a", 1: "b"})


def test_unknown_or_mixed_layouts_are_refused_naming_keys(tmp_path):
    resnet = {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8), "fc.bias": torch.zeros(10)}
    for source in ("auto", "timm", "transformers"):
        with pytest.raises(ValueError, match=r"not a Swin checkpoint .* 'conv1\.weight', 'fc\.bias', 'fc\.weight'"):
            convert_state_dict(resnet, source)
    torch.save({"model": resnet}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"not a Swin checkpoint .* 'conv1\.weight'"):
        main(["--checkpoint", str(tmp_path / "resnet.pth"), "--output_dir", str(tmp_path / "out")])
    # Microsoft's mergings with timm's head
    mixed = dict(microsoft_layout(timm_swin(tiny_config()))["model"])
    mixed["head.fc.weight"], mixed["head.fc.bias"] = mixed.pop("head.weight"), mixed.pop("head.bias")
    with pytest.raises(ValueError, match=r"mixes Microsoft's layout .*layers\.0\.downsample.* with timm's .*head\.fc"):
        convert_state_dict(mixed)
    # a merging after the last stage, in Microsoft's layout
    extra = dict(microsoft_layout(timm_swin(tiny_config()))["model"])
    extra["layers.2.downsample.norm.weight"] = torch.ones(64)
    with pytest.raises(
        ValueError,
        match=r"'layers\.2\.downsample\.norm\.weight' would be the patch merging at the "
        r"end of stage 2, but a model with 3 stages has them at the end of stages 0\.\.1",
    ):
        convert_state_dict(extra)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has none of model.safetensors, pytorch_model.bin"):
        main(["--checkpoint", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "out")])


def tiny_transformers_swin(**overrides):
    """A tiny transformers SwinForImageClassification (32 px, patch 2, windows of 4), perturbed weights."""
    from transformers import SwinConfig, SwinForImageClassification

    values = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4)
    values.update(overrides)
    return perturbed(SwinForImageClassification(SwinConfig(num_labels=3, **values)), scale=0.2)


def test_transformers_folder_gives_its_image_size_and_preprocessing(tmp_path):
    """The converted folder preprocesses as the source's (bicubic, its mean and std) at the source's size, so the
    two pipelines agree; an explicit --image_size that disagrees is warned about."""
    import numpy as np
    import PIL.Image
    from transformers import AutoImageProcessor, ViTImageProcessor

    reference = tiny_transformers_swin(image_size=48)
    reference.save_pretrained(tmp_path / "hf")
    source_processor = ViTImageProcessor(
        size={"height": 48, "width": 48}, resample=3, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    source_processor.save_pretrained(tmp_path / "hf")
    model = main(["--checkpoint", str(tmp_path / "hf" / "model.safetensors"), "--output_dir", str(tmp_path / "out")])
    assert model.config.image_size == 48
    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")
    assert (processor.resample, processor.size) == (3, {"height": 48, "width": 48})
    assert list(processor.image_mean) == pytest.approx([0.5, 0.4, 0.3])
    image = PIL.Image.fromarray((np.random.RandomState(0).rand(61, 53, 3) * 255).astype("uint8"))
    pixels = processor(image, return_tensors="pt").pixel_values
    torch.testing.assert_close(pixels, source_processor(image, return_tensors="pt").pixel_values)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, reference(pixels).logits, atol=ATOL, rtol=0)
    with pytest.warns(UserWarning, match=r"--image_size 64, but the checkpoint's config .* says 48"):
        model = main(
            ["--checkpoint", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "out64"), "--image_size", "64"]
        )
    assert model.config.image_size == 64


def test_timm_pretrained_cfg_gives_image_size_and_preprocessing(tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor

    timm_model = timm_swin(tiny_config(image_size=64, num_labels=3))
    (tmp_path / "hub").mkdir()
    save_file(timm_model.state_dict(), tmp_path / "hub" / "model.safetensors")
    pretrained_cfg = {"input_size": [3, 64, 64], "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.3] * 3}
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"num_classes": 3, "pretrained_cfg": pretrained_cfg}))
    model = main(["--checkpoint", str(tmp_path / "hub"), "--output_dir", str(tmp_path / "out")])
    assert model.config.image_size == 64
    processor = AutoImageProcessor.from_pretrained(tmp_path / "out")
    assert (processor.resample, list(processor.image_mean), list(processor.image_std)) == (3, [0.5] * 3, [0.3] * 3)
    pretrained_cfg["interpolation"] = "area"
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"num_classes": 3, "pretrained_cfg": pretrained_cfg}))
    with pytest.raises(ValueError, match=r"interpolation is 'area'; expected one of nearest, lanczos, bilinear"):
        main(["--checkpoint", str(tmp_path / "hub"), "--output_dir", str(tmp_path / "out2")])


def test_transformers_settings_swin_tiny_cannot_honour_are_refused(tmp_path):
    # transformers uses the eps in its blocks and final norm, 1e-5 in the embedding and mergings: ours has one eps
    reference = tiny_transformers_swin(layer_norm_eps=0.1)
    with pytest.raises(ValueError, match=r"layer_norm_eps=0.1; transformers' Swin uses it in its blocks"):
        model_from_state_dict(convert_state_dict(reference.state_dict()), source_config=reference.config.to_dict())
    relu = tiny_transformers_swin(hidden_act="relu")
    relu.save_pretrained(tmp_path / "relu")
    with pytest.raises(ValueError, match=r"hidden_act='relu'; swin_tiny's MLP uses 'gelu' only"):
        main(["--checkpoint", str(tmp_path / "relu"), "--output_dir", str(tmp_path / "out")])
    absolute = tiny_transformers_swin(use_absolute_embeddings=True)
    with pytest.raises(ValueError, match=r"use_absolute_embeddings=True; swin_tiny has no absolute position"):
        config_from_state_dict(convert_state_dict(reference.state_dict()), source_config=absolute.config.to_dict())


@settings(max_examples=4, deadline=None)
@given(mlp_ratio=st.sampled_from([1, 2, 3, 1.5]), layout=st.sampled_from(["timm", "transformers"]))
def test_mlp_ratio_is_read_off_the_weights(mlp_ratio, layout):
    if layout == "timm":
        reference = timm_swin(tiny_config(mlp_ratio=mlp_ratio))
    else:
        reference = tiny_transformers_swin(mlp_ratio=mlp_ratio)
    model = model_from_state_dict(convert_state_dict(reference.state_dict()), image_size=32)
    assert model.config.mlp_ratio == mlp_ratio
    pixels = images(model.config)
    with torch.no_grad():
        expected = reference(pixels) if layout == "timm" else reference(pixels).logits
        torch.testing.assert_close(model(pixels).logits, expected, atol=ATOL, rtol=0)
