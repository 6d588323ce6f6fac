"""The batched reference augmentation against torchvision's own per-image functionals."""

import io
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from swin_tiny_hf import image_processing_swin_tiny as image_processing_module
from swin_tiny_hf.training.batch_augmentation import (
    BatchColorJitter,
    BatchRandAugment,
    BatchRandomResizedCrop,
    ReferenceTrainAugmentation,
    adjust_brightness_,
    adjust_contrast_,
    adjust_hue_,
    adjust_saturation_,
)
from swin_tiny_hf.training.data import decode_rgb


def natural_images(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(count, 3, size, size) uint8 with smooth colour gradients, flat patches, saturated and grey pixels."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, size)
    base = torch.stack(
        [
            ramp.view(1, -1).expand(size, size),
            ramp.view(-1, 1).expand(size, size),
            (ramp.view(1, -1) * ramp.view(-1, 1)),
        ]
    )  # (3, size, size)
    images = base * torch.rand(count, 3, 1, 1, generator=g) * 255 + torch.rand(count, 3, size, size, generator=g) * 40
    images = images.clamp(0, 255).to(torch.uint8)
    images[:, :, :4, :4] = 128  # grey: hue undefined
    images[:, 0, -4:, -4:], images[:, 1:, -4:, -4:] = 255, 0  # saturated red
    return images


def assert_uint8_close(ours: torch.Tensor, reference: torch.Tensor, max_mismatch: float) -> None:
    """Equal up to off-by-one rounding, on at most `max_mismatch` of the values."""
    difference = (ours.float() - reference.float()).abs()
    assert difference.max() <= 1, difference.max()
    assert (difference > 0).float().mean() <= max_mismatch


@pytest.mark.parametrize(
    "ours, theirs, low, high, max_mismatch",
    [
        (adjust_brightness_, F.adjust_brightness, 0.5, 1.5, 0.0),
        (adjust_contrast_, F.adjust_contrast, 0.5, 1.5, 0.0),
        (adjust_saturation_, F.adjust_saturation, 0.0, 2.0, 0.0),
        (adjust_hue_, F.adjust_hue, -0.5, 0.5, 1e-4),
    ],
)
def test_each_colour_adjustment_is_torchvisions_with_per_image_factors(ours, theirs, low, high, max_mismatch):
    images = natural_images(16)
    factors = torch.linspace(low, high, 16)
    batched = ours(images.float(), factors)  # float32 holding uint8 values
    reference = torch.stack([theirs(image, float(f)) for image, f in zip(images, factors)])
    assert torch.equal(batched, batched.floor()) and batched.min() >= 0 and batched.max() <= 255
    assert_uint8_close(batched, reference, max_mismatch)


def test_color_jitter_applies_each_images_own_factors_in_its_own_order():
    torch.manual_seed(0)
    jitter = BatchColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    images = natural_images(48)
    factors, order = jitter.draw(48)
    assert len({tuple(o) for o in order.tolist()}) > 10  # many different orders in one batch
    batched = jitter.apply_float_(images.float(), factors, order)
    kernels = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    reference = []
    for image, f, o in zip(images, factors, order):
        for k in o.tolist():
            image = kernels[k](image, float(f[k]))
        reference.append(image)
    assert_uint8_close(batched, torch.stack(reference), max_mismatch=1e-4)
    # uint8 in, uint8 out, drawing within the ranges
    assert jitter(images).dtype == torch.uint8
    many, _ = jitter.draw(4000)
    for column, (low, high) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1)]):
        assert low <= many[:, column].min() and many[:, column].max() <= high
        assert abs(many[:, column].mean() - (low + high) / 2) < 0.01 * (high - low) + 0.005


def test_rand_augment_is_torchvisions_operation_per_image():
    torch.manual_seed(0)
    augment = BatchRandAugment(num_ops=2, magnitude=9)
    images = natural_images(96)
    operations, negate = augment.draw(96)
    assert set(operations.flatten().tolist()) == set(range(len(augment.names)))  # every operation exercised
    batched = augment.apply(images, operations, negate)
    reference = []
    for image, ops, signs in zip(images, operations, negate):
        for op, negative in zip(ops.tolist(), signs.tolist()):
            name = augment.names[op]
            magnitude = augment.magnitude(name, 32, 32)
            if augment.policy._AUGMENTATION_SPACE[name][1] and negative:
                magnitude = -magnitude
            image = augment.policy._apply_image_or_video_transform(
                image, name, magnitude, augment.policy.interpolation, augment.policy._fill
            )
        reference.append(image)
    assert_uint8_close(batched, torch.stack(reference), max_mismatch=0.0)
    assert not torch.equal(batched, images)


def test_rand_augment_draws_like_torchvision():
    torch.manual_seed(0)
    augment = BatchRandAugment(num_ops=2, magnitude=5)
    operations, negate = augment.draw(14_000)
    counts = torch.bincount(operations.flatten(), minlength=14).float()
    expected = 28_000 / 14
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all(), counts
    assert abs(negate.float().mean() - 0.5) < 0.01
    assert augment.names == list(v2.RandAugment._AUGMENTATION_SPACE)


def test_random_resized_crop_boxes_follow_torchvisions_rule():
    torch.manual_seed(0)
    crop = BatchRandomResizedCrop(16, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
    heights, widths = torch.full((2000,), 40), torch.full((2000,), 60)
    top, left, h, w = crop.draw(heights, widths).unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    area = (h * w).float() / (40 * 60)
    assert area.min() > 0.5 - 0.05 and area.max() <= 1.0
    assert ((w.float() / h) > 3 / 4 - 0.1).all() and ((w.float() / h) < 4 / 3 + 0.1).all()
    assert top.float().std() > 1 and left.float().std() > 1  # the position is random too
    # Where no attempt fits, the central crop, exactly as torchvision's.
    narrow = BatchRandomResizedCrop(8, scale=(0.9, 1.0))
    box = narrow.draw(torch.tensor([10]), torch.tensor([100]))[0].tolist()
    torchvision_box = v2.RandomResizedCrop(8, scale=(0.9, 1.0)).make_params([torch.zeros(3, 10, 100)])
    assert box == [torchvision_box[k] for k in ("top", "left", "height", "width")]


def test_random_resized_crop_output_is_torchvisions_resized_crop_of_its_box():
    torch.manual_seed(1)
    images = [natural_images(1, size, seed=size)[0] for size in (20, 32, 48)]  # sizes may differ
    crop = BatchRandomResizedCrop(24, scale=(0.5, 1.0))
    torch.manual_seed(2)
    out = crop(images)
    torch.manual_seed(2)
    boxes = crop.draw(torch.tensor([20, 32, 48]), torch.tensor([20, 32, 48]))
    assert out.shape == (3, 3, 24, 24) and out.dtype == torch.uint8
    for image, result, (top, left, h, w) in zip(images, out, boxes.tolist()):
        torch.testing.assert_close(result, F.resized_crop(image, top, left, h, w, [24, 24], antialias=True))


def test_reference_augmentation_draws_per_image_and_normalises():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    augment = ReferenceTrainAugmentation(32, mean, std, erasing_prob=0.0)
    same = [natural_images(1)[0]] * 16  # one image 16 times: per-image parameters make 16 different results
    torch.manual_seed(0)
    out = augment(same)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert len({o.sum().item() for o in out}) == 16
    pixels = out * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)  # back to [0, 1]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    torch.testing.assert_close(pixels * 255, (pixels * 255).round(), atol=1e-3, rtol=0)  # from uint8 values
    torch.manual_seed(0)
    torch.testing.assert_close(augment(same), out, rtol=0, atol=0)  # seeded: reproducible


def test_bad_augmentation_arguments_raise():
    with pytest.raises(ValueError, match="hflip_prob must be a probability in \\[0, 1\\], got 1.5"):
        ReferenceTrainAugmentation(32, [0.5] * 3, [0.2] * 3, hflip_prob=1.5)
    with pytest.raises(ValueError, match="mean and std must be 3 values each"):
        ReferenceTrainAugmentation(32, [0.5] * 3, [0.2] * 4)
    with pytest.raises(ValueError, match="hue must lie in \\[0, 0.5\\], got 0.7"):
        BatchColorJitter(0.1, 0.1, 0.1, 0.7)
    with pytest.raises(ValueError, match="scale and ratio"):
        BatchRandomResizedCrop(8, scale=(1.0, 0.5))


def _encoded(image: Image.Image, format: str) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return {"bytes": buffer.getvalue(), "path": None}


@pytest.mark.parametrize(
    "mode, format",
    [("RGB", "JPEG"), ("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("RGB", "BMP"), ("RGB", "TIFF")],
)
@pytest.mark.parametrize("torchcodec", [True, False], ids=["torchcodec", "without_torchcodec"])
def test_decode_rgb_is_pils_rgb_conversion(mode, format, torchcodec, monkeypatch):
    if not torchcodec:  # a machine where TorchCodec's libraries do not load: PIL decodes every format
        monkeypatch.setattr(image_processing_module, "_torchcodec_decode", None)
    array = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    image = Image.fromarray(array).convert(mode)
    encoded = _encoded(image, format)
    with Image.open(io.BytesIO(encoded["bytes"])) as reopened:
        expected = torch.from_numpy(np.array(reopened.convert("RGB"))).permute(2, 0, 1)
    with warnings.catch_warnings():  # torch warns when a tensor is made over a read-only buffer (PIL's array)
        warnings.simplefilter("error")
        decoded = decode_rgb(encoded, "train", 3)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 12, 10)
    torch.testing.assert_close(decoded, expected, rtol=0, atol=0)
    decoded[0, 0, 0] = 7  # the tensor owns writable memory: augmentations that work in place may write to it
