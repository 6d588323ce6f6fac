"""The Tiny ImageNet image processor of a new model, and a one-call save of model, processor and pipeline.

The processor is `SwinTinyImageProcessor` (`image_processing_swin_tiny.py`): `ViTImageProcessor`, every option
as there, that gives the pixels training sees where the stock one would not (transparency, 16-bit, float in
[0, 1], 2-D arrays, files). A classifier's folder also carries its own pipeline (`pipeline_swin_tiny.py`, task
"swin-tiny-image-classification"), which decodes files with the training decoder and names a file it cannot
read. Both are remote code beside the weights.
"""

from __future__ import annotations

import os

from transformers import AutoVideoProcessor, PreTrainedModel

from .configuration_swin_tiny import SwinTinyConfig
from .image_processing_swin_tiny import SwinTinyImageProcessor

# A swin_tiny folder has no video processor; said here, transformers' pipelines, which look for one, stop at this.
# Otherwise they read the image processor's auto_map as a video processor's ("SwinTinyVideoProcessor") and the
# plain pipeline("image-classification", model=folder) asks on the terminal whether to run remote code, waiting
# 15 s for an answer, though this package is installed.
AutoVideoProcessor.register(SwinTinyConfig, video_processor_classes={}, exist_ok=True)

# Tiny ImageNet channel statistics (reference design).
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2296, 0.2263, 0.2255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_image_processor(
    image_size: int = 64,
    mean: tuple[float, float, float] = TINY_IMAGENET_MEAN,
    std: tuple[float, float, float] = TINY_IMAGENET_STD,
) -> SwinTinyImageProcessor:
    """A SwinTinyImageProcessor that resizes to image_size x image_size (bilinear) and normalises."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    return SwinTinyImageProcessor(
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


def save_model_and_processor(model: PreTrainedModel, save_directory: str | os.PathLike, image_processor=None) -> None:
    """Write weights, config (with auto_map), model code, image processor and, for a classifier, its pipeline.

    The folder then loads with `AutoModelForImageClassification.from_pretrained(folder,
    trust_remote_code=True)`, `AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)`,
    `pipeline("image-classification", model=folder, trust_remote_code=True)` (transformers' pipeline with this
    processor) and `pipeline("swin-tiny-image-classification", model=folder, trust_remote_code=True)` (the
    folder's own pipeline). Where this package is imported, all but the last need no trust_remote_code.
    """
    if image_processor is None:
        image_processor = make_image_processor(model.config.image_size)
    model.save_pretrained(save_directory)  # a classifier also writes its pipeline (see its save_pretrained)
    image_processor.save_pretrained(save_directory)
