import json
import logging

import pytest

from swin_tiny_hf import SwinTinyConfig

from conftest import tiny_config


def test_defaults_are_the_tiny_imagenet_model():
    config = SwinTinyConfig()
    assert (config.image_size, config.patch_size, config.num_channels, config.embed_dim) == (64, 4, 3, 96)
    assert config.depths == [2, 2, 6, 2]
    assert config.num_heads == [2, 4, 8, 16]
    assert config.window_size == [8, 8, 4, 2]
    assert config.mlp_ratio == 4.0 and config.qkv_bias and config.patch_norm
    assert config.drop_path_rate == 0.2
    assert config.hidden_dropout_prob == 0.0 and config.attention_probs_dropout_prob == 0.0
    assert config.layer_norm_eps == 1e-5 and config.initializer_range == 0.02
    assert config.num_labels == 200
    # 64 px / 4 = 16 tokens a side, halved per stage; only the first stage is larger than its window.
    assert config.stage_resolutions == [16, 8, 4, 2]
    assert config.stage_windows == [8, 8, 4, 2]
    assert config.stage_shifts == [4, 0, 0, 0]


def test_int_window_means_every_stage_and_is_clipped():
    config = SwinTinyConfig(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)
    assert config.window_size == [7, 7, 7, 7]
    assert config.stage_resolutions == [56, 28, 14, 7]
    assert config.stage_shifts == [3, 3, 3, 0]
    big_window = SwinTinyConfig(window_size=16)
    assert big_window.stage_windows == [16, 8, 4, 2] and big_window.stage_shifts == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=60), "image_size=60 must be divisible by patch_size"),
        (dict(patch_size=0), "patch_size=0 must be a positive integer"),
        (dict(embed_dim=-8), "embed_dim=-8 must be a positive integer"),
        (dict(window_size=[8, 8, 3, 2]), "window_size[2]=3 does not divide the stage resolution 4"),
        (dict(window_size=[8, 8, 4]), "window_size=[8, 8, 4] has 3 entries but depths=[2, 2, 6, 2] has 4"),
        (dict(num_heads=[5, 4, 8, 16]), "num_heads[0]=5 does not divide the stage's channels"),
        (dict(num_heads=[2, 4, 8]), "num_heads=[2, 4, 8] has 3 entries but depths=[2, 2, 6, 2] has 4"),
        (dict(depths=[2, 0, 6, 2]), "depths[1]=0 must be a positive integer"),
        (dict(depths=[]), "depths=[] must name at least one stage"),
        (dict(drop_path_rate=1.0), "0 <= drop_path_rate < 1"),
        (dict(drop_path_rate=-0.1), "0 <= drop_path_rate < 1"),
        (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob=1.5"),
        (dict(mlp_ratio=0), "mlp_ratio=0 must be positive"),
        (dict(layer_norm_eps=0.0), "layer_norm_eps=0.0 must be positive"),
    ],
)
def test_every_rule_raises_naming_field_value_and_rule(overrides, message):
    with pytest.raises(ValueError) as error:
        SwinTinyConfig(**overrides)
    assert message in str(error.value)


def test_unknown_argument_is_kept_with_a_warning_naming_the_closest_field(caplog):
    with caplog.at_level(logging.WARNING):
        config = SwinTinyConfig(drop_path_rat=0.1, path_norm=False, my_annotation="from a client")
    assert config.drop_path_rat == 0.1 and config.my_annotation == "from a client"
    assert config.drop_path_rate == 0.2 and config.patch_norm is True  # the fields are untouched
    message = caplog.text
    assert "'drop_path_rat' (closest field: 'drop_path_rate')" in message
    assert "'path_norm' (closest field: 'patch_norm')" in message
    assert "'my_annotation'" in message


def test_a_folder_annotated_by_anyone_loads_and_keeps_the_annotation(tmp_path, caplog):
    """Trainer, PEFT and transformers' own tests set attributes on a config, save it and load it back."""
    config = tiny_config()
    config.tie_word_embeddings = False
    config.experiment = {"run": 3}
    config.save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        loaded = SwinTinyConfig.from_pretrained(tmp_path)
    assert loaded.tie_word_embeddings is False and loaded.experiment == {"run": 3}
    assert loaded.to_dict() == config.to_dict()
    assert "'experiment'" in caplog.text


def test_known_fields_stay_validated_when_loading(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["window_size"] = [4, 4, 3]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"window_size\[2\]=3 does not divide the stage resolution 4"):
        SwinTinyConfig.from_pretrained(tmp_path)


def test_derived_sizes_must_agree_with_the_fields():
    config = SwinTinyConfig(hidden_size=768, num_hidden_layers=4)  # what the fields give: accepted, not stored
    assert config.hidden_size == 768 and "hidden_size" not in config.to_dict()
    with pytest.raises(ValueError, match=r"hidden_size=512 disagrees with the fields .* give hidden_size=768"):
        SwinTinyConfig(hidden_size=512)
    with pytest.raises(ValueError, match=r"num_hidden_layers=12 disagrees .* num_hidden_layers=4"):
        SwinTinyConfig(num_hidden_layers=12)


def test_save_and_load_round_trip(tmp_path):
    config = tiny_config(id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1}, patch_norm=False)
    config.save_pretrained(tmp_path)
    loaded = SwinTinyConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.num_labels == 2 and loaded.id2label == {0: "cat", 1: "dog"} and loaded.patch_norm is False
