"""The image processor that ships with every saved model, and a one-call save of both.

A stock `ViTImageProcessor` (resize, rescale to [0, 1], normalise) is all this model needs, and
stock processors load everywhere with `AutoImageProcessor` and `pipeline` without remote code.
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel, ViTImageProcessor

# Tiny ImageNet channel statistics (reference design).
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2296, 0.2263, 0.2255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_image_processor(
    image_size: int = 64,
    mean: tuple[float, float, float] = TINY_IMAGENET_MEAN,
    std: tuple[float, float, float] = TINY_IMAGENET_STD,
) -> ViTImageProcessor:
    """A ViTImageProcessor that resizes to image_size x image_size (bilinear) and normalises."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=2,  # PIL.Image.BILINEAR
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )


def save_model_and_processor(
    model: PreTrainedModel, save_directory: str | os.PathLike, image_processor: ViTImageProcessor | None = None
) -> None:
    """Write weights, config (with auto_map), model code and image processor into one folder.

    The folder then loads with `AutoModelForImageClassification.from_pretrained(folder,
    trust_remote_code=True)`, `AutoImageProcessor.from_pretrained(folder)` and
    `pipeline("image-classification", model=folder, trust_remote_code=True)`.
    """
    if image_processor is None:
        image_processor = make_image_processor(model.config.image_size)
    model.save_pretrained(save_directory)
    image_processor.save_pretrained(save_directory)
