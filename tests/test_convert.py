"""Published Swin-T layouts (timm, transformers) convert to ours and give the same logits (random weights, offline)."""

import pytest
import torch

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.convert import config_from_state_dict, convert_state_dict, main

from conftest import perturbed

timm = pytest.importorskip("timm")

CLASSIC = dict(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def timm_model():
    return perturbed(
        timm.models.swin_transformer.SwinTransformer(
            img_size=224, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, num_classes=1000
        )
    )


@pytest.fixture(scope="module")
def transformers_model():
    from transformers import SwinConfig, SwinForImageClassification

    return perturbed(SwinForImageClassification(SwinConfig(num_labels=1000)))


def ours(state_dict):
    model = SwinTinyForImageClassification(SwinTinyConfig(**CLASSIC)).eval()
    model.load_state_dict(state_dict, strict=True)
    return model


def test_timm_swin_t_gives_the_same_logits(timm_model, images):
    model = ours(convert_state_dict(timm_model.state_dict(), "timm"))
    with torch.no_grad():
        expected = timm_model(images)
        assert expected.std() > 0.1
        torch.testing.assert_close(model(images).logits, expected, atol=1e-4, rtol=0)


def test_transformers_swin_t_gives_the_same_logits_in_memory_and_saved_names(transformers_model, images, tmp_path):
    from safetensors.torch import load_file

    with torch.no_grad():
        expected = transformers_model(images).logits
    assert expected.std() > 0.1
    in_memory = transformers_model.state_dict()
    assert any(".q_proj." in k for k in in_memory)
    transformers_model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert any(".attention.self.query." in k for k in saved) and any("intermediate.dense" in k for k in saved)
    for state_dict in (in_memory, saved):
        with torch.no_grad():
            logits = ours(convert_state_dict(state_dict, "transformers"))(images).logits
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_every_source_key_is_used_or_named(timm_model):
    state_dict = dict(timm_model.state_dict())
    state_dict["layers.0.blocks.0.attn.extra.weight"] = torch.zeros(1)
    state_dict["head.fc.weight_g"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"2 keys of the timm checkpoint were not used.*extra\.weight.*weight_g"):
        convert_state_dict(state_dict, "timm")
    with pytest.raises(ValueError, match="source must be one of"):
        convert_state_dict(state_dict, "keras")


def test_stored_relative_index_is_checked_and_dropped(timm_model):
    state_dict = dict(timm_model.state_dict())
    from swin_tiny_hf.windows import relative_position_index

    state_dict["layers.0.blocks.0.attn.relative_position_index"] = relative_position_index(7)
    assert "swin.stages.0.blocks.0.attention.relative_position_index" not in convert_state_dict(state_dict, "timm")
    state_dict["layers.0.blocks.0.attn.relative_position_index"] = relative_position_index(7).flip(0)
    with pytest.raises(ValueError, match="does not match the relative position index of a 7x7 window"):
        convert_state_dict(state_dict, "timm")


def test_missing_value_projection_is_named(transformers_model):
    state_dict = {k: v for k, v in transformers_model.state_dict().items() if "blocks.0.attention.v_proj" not in k}
    with pytest.raises(ValueError, match="has no value projection"):
        convert_state_dict(state_dict, "transformers")


def test_config_is_read_off_the_weights(timm_model):
    config = config_from_state_dict(convert_state_dict(timm_model.state_dict(), "timm"))
    assert (config.depths, config.num_heads, config.window_size, config.num_labels) == (
        [2, 2, 6, 2],
        [3, 6, 12, 24],
        [7, 7, 7, 7],
        1000,
    )
    # ImageNet-1k's head: readable names, WordNet ids kept
    assert config.id2label[1] == "goldfish" and config.wordnet_ids[1] == "n01443537"
    assert config.id2label[134] == "crane (n02012849)" and config.id2label[517] == "crane (n03126707)"
    assert len(set(config.id2label.values())) == 1000 and config.label2id["goldfish"] == 1


def test_cli_writes_a_folder_that_fine_tunes_with_a_new_head(timm_model, images, tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoImageProcessor

    save_file(timm_model.state_dict(), tmp_path / "swin_tiny.safetensors")
    main(
        [
            "--source",
            "timm",
            "--checkpoint",
            str(tmp_path / "swin_tiny.safetensors"),
            "--output_dir",
            str(tmp_path / "converted"),
        ]
    )
    loaded = SwinTinyForImageClassification.from_pretrained(tmp_path / "converted").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).logits, timm_model(images), atol=1e-4, rtol=0)
    processor = AutoImageProcessor.from_pretrained(tmp_path / "converted")
    assert processor.size == {"height": 224, "width": 224} and processor.image_mean == pytest.approx(
        [0.485, 0.456, 0.406]
    )
    # a new 200-class head on the same backbone, as train.py --ignore_mismatched_sizes does
    fine_tune = SwinTinyForImageClassification.from_pretrained(
        tmp_path / "converted", num_labels=200, ignore_mismatched_sizes=True
    )
    assert fine_tune.classifier.weight.shape == (200, 768)
    torch.testing.assert_close(fine_tune.swin.norm.weight, loaded.swin.norm.weight)
