"""Images of any size: the model, the classifier and the backbone pad to the patch size and each stage's map to a
multiple of its window (right and bottom), shift where the map is larger than a window, and crop back, as the
original Swin and transformers' Swin do. Checked against transformers' Swin at sizes that need padding."""

import pytest
import torch
from transformers import (
    SwinBackbone,
    SwinConfig,
    SwinForImageClassification,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from swin_tiny_hf import SwinTinyBackbone, SwinTinyConfig, SwinTinyForImageClassification, SwinTinyModel
from swin_tiny_hf.convert import convert_state_dict
from swin_tiny_hf.windows import shift_attention_mask

from conftest import perturbed, tiny_config

CLASSIC = dict(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def images(height, width, batch=1, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def classic_pair():
    """transformers' Swin-T with random (perturbed) weights, and ours with the same weights converted."""
    torch.manual_seed(0)
    reference = perturbed(SwinForImageClassification(SwinConfig(num_labels=1000)))
    model = SwinTinyForImageClassification(SwinTinyConfig(**CLASSIC)).eval()
    model.load_state_dict(convert_state_dict(reference.state_dict(), "transformers"))
    return reference, model


def fresh_copy(reference: SwinForImageClassification) -> SwinForImageClassification:
    """transformers' Swin keeps state between calls: once an input leaves a stage no larger than its window,
    that stage's blocks set shift_size = 0 for good (`SwinLayer.set_shift_and_window_size` never resets it), so
    a 224 px call turns stage 4's shift off for every later, larger input. Each comparison takes a fresh copy."""
    copy = SwinForImageClassification(reference.config).eval()
    copy.load_state_dict(reference.state_dict())
    return copy


# 256x320: 64x80 tokens, padded to 70x84 for 7x7 windows; 250x300: not a multiple of the patch (63x75 tokens),
# odd sides at the patch merging; 196x210: smaller than the config's 224 (49x53 tokens, last stage 7x7: no shift).
# Ours is one model through all sizes (and 224 first): it keeps no state between calls.
@pytest.mark.parametrize("height, width", [(256, 320), (250, 300), (196, 210)])
def test_classifier_matches_transformers_swin_at_sizes_that_need_padding(classic_pair, height, width):
    reference, model = classic_pair
    pixel_values = images(height, width, batch=2)
    with torch.no_grad():
        model(images(224, 224))
        expected = fresh_copy(reference)(pixel_values).logits
        logits = model(pixel_values).logits
    assert expected.std() > 0.1
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


def test_backbone_at_detection_size_matches_transformers_swin_backbone(classic_pair):
    """512x683, a detection input: maps of H/4 ... H/32 (sides rounded up), equal to transformers' SwinBackbone."""
    reference, _ = classic_pair
    theirs = SwinBackbone(SwinConfig(out_features=STAGES)).eval()
    trunk = {k: v for k, v in reference.state_dict().items() if k.startswith("swin.")}
    missing = theirs.load_state_dict(trunk, strict=False).missing_keys
    # only the per-stage norms are new (its unused final norm keeps its init)
    assert missing and all(k.startswith("hidden_states_norms.") for k in missing)
    perturbed(theirs.hidden_states_norms)
    ours = SwinTinyBackbone(SwinTinyConfig(**CLASSIC, out_features=STAGES)).eval()
    converted = convert_state_dict(reference.state_dict(), "transformers")
    state = {
        k.removeprefix("swin."): v for k, v in converted.items() if k.startswith("swin.") and "swin.norm." not in k
    }
    state.update({k: v for k, v in theirs.state_dict().items() if k.startswith("hidden_states_norms.")})
    ours.load_state_dict(state, strict=True)

    pixel_values = images(512, 683)
    with torch.no_grad():
        expected = theirs(pixel_values).feature_maps
        maps = ours(pixel_values).feature_maps
    assert [tuple(m.shape[2:]) for m in maps] == [(128, 171), (64, 86), (32, 43), (16, 22)]
    assert [m.shape[1] for m in maps] == ours.channels == [96, 192, 384, 768]
    for mine, theirs_map in zip(maps, expected):
        torch.testing.assert_close(mine, theirs_map, atol=1e-4, rtol=0)


def test_tiny_imagenet_model_takes_larger_and_smaller_images():
    """The 64 px model: a detection-size input and one smaller than its stage-1 window, forward and backward."""
    torch.manual_seed(0)
    backbone = SwinTinyBackbone(SwinTinyConfig(out_features=STAGES)).eval()
    with torch.no_grad():
        maps = backbone(images(300, 420)).feature_maps
    assert [tuple(m.shape[2:]) for m in maps] == [(75, 105), (38, 53), (19, 27), (10, 14)]
    assert all(torch.isfinite(m).all() for m in maps)

    model = SwinTinyForImageClassification(SwinTinyConfig()).train()
    out = model(images(20, 28, batch=2), labels=torch.tensor([3, 5]), output_hidden_states=True)
    out.loss.backward()
    # tokens: 5x7 -> 3x4 -> 2x2 -> 1x1 (each stage padded to its 8, 8, 4, 2 window, never clipped)
    assert [h.shape[1] for h in out.hidden_states] == [35, 35, 12, 4, 1]
    assert torch.isfinite(out.logits).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_upernet_segments_a_non_square_image_at_full_size():
    config = UperNetConfig(
        backbone_config=tiny_config(out_features=["stage1", "stage2", "stage3"]),
        hidden_size=16,
        auxiliary_in_channels=64,  # the auxiliary head reads the third map (64 channels)
        auxiliary_channels=16,
        num_labels=4,
    )
    segmenter = UperNetForSemanticSegmentation(config).train()
    pixel_values = images(40, 72, batch=2)
    labels = torch.randint(0, 4, (2, 40, 72), generator=torch.Generator().manual_seed(1))
    out = segmenter(pixel_values=pixel_values, labels=labels)
    assert out.logits.shape == (2, 4, 40, 72)  # one score per class for every pixel of the input
    out.loss.backward()
    assert segmenter.backbone.embeddings.projection.weight.grad.abs().sum() > 0


def test_shift_follows_the_map_size_and_masks_follow_the_padded_size():
    model = SwinTinyModel(tiny_config()).eval()  # 32 px, patch 2: stages of 16, 8, 4 tokens, windows of 4
    first = model.stages[0]
    assert [first.shift_for(n, n) for n in (16, 5, 4, 3)] == [2, 2, 0, 0]  # shift only where the map exceeds a window
    last = model.stages[2]  # 4x4 at the config's size: one window, no shift; larger inputs shift there too
    assert last.shift_mask_for(4, 4, torch.device("cpu")) is None and last.shift_for(6, 9) == 2
    assert torch.equal(first.shift_mask_for(16, 16, torch.device("cpu")), shift_attention_mask(16, 16, 4, 2))
    other = first.shift_mask_for(10, 23, torch.device("cpu"))  # padded to 12x24: 3x6 windows
    assert torch.equal(other, shift_attention_mask(12, 24, 4, 2))


def test_masks_follow_the_size_whatever_came_before():
    """24x40 and 40x24 maps have as many windows, with different shift masks: each input, after the other size
    and with or without gradients, gives what it gives alone in a fresh model. A mask kept from an earlier
    forward (a cache keyed on the window count, say) would be off by O(1)."""
    torch.manual_seed(0)
    model = perturbed(SwinTinyModel(tiny_config()))
    tall, wide = images(48, 80, seed=1), images(80, 48, seed=2)

    def last_hidden_state(model, pixel_values, grad):
        with torch.set_grad_enabled(grad):  # with gradients, attention may take another kernel: compared alike
            return model(pixel_values).last_hidden_state.detach()

    def alone(pixel_values, grad):
        torch.manual_seed(0)
        return last_hidden_state(perturbed(SwinTinyModel(tiny_config())), pixel_values, grad)

    for name, pixel_values in (("tall", tall), ("wide", wide), ("tall", tall), ("wide", wide)):
        for grad in (False, True):
            assert torch.equal(last_hidden_state(model, pixel_values, grad), alone(pixel_values, grad)), (name, grad)


def test_padding_is_zeros_right_and_bottom_of_the_image():
    """An input that is not a multiple of the patch gives what the same image with zero rows and columns added
    at the bottom and right gives."""
    model = perturbed(SwinTinyModel(tiny_config()))
    pixel_values = images(29, 35)
    padded = torch.nn.functional.pad(pixel_values, (0, 1, 0, 1))  # 30x36: multiples of the patch (2)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).last_hidden_state, model(padded).last_hidden_state)
