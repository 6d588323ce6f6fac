"""The image-classification pipeline that ships with every saved classifier (remote code), as its own task.

config.json names it under the task "swin-tiny-image-classification" (`custom_pipelines`), not under
"image-classification": transformers asks for trust_remote_code for any task named there, so the plain
`pipeline("image-classification", model=folder)` stays transformers' own pipeline with the folder's
`SwinTinyImageProcessor` (no flag where this package is installed). This one is reached by
`pipeline("swin-tiny-image-classification", model=folder, trust_remote_code=True)`, or, where the package is
installed, by `pipeline("image-classification", model=folder, pipeline_class=SwinTinyImageClassificationPipeline)`.

It differs from transformers' `ImageClassificationPipeline` in reading its inputs only:
- a local file is decoded by the training data's own decoder (`decode_image_bytes`), so inference sees the
  pixels training saw (16-bit PNGs included: transformers' `load_image` clips them to white), and a file
  that cannot be read raises a ValueError naming it, also inside a list of many;
- a PIL image is made upright and RGB as `load_image` does, but 16-bit and float modes are scaled, not clipped.
Arrays and tensors go to the image processor as they are (its options decide, as in the stock pipeline).
"""

from __future__ import annotations

import os

import PIL.Image
import PIL.ImageOps
from transformers import ImageClassificationPipeline
from transformers.image_utils import load_image

from .image_processing_swin_tiny import read_image_file, rgb_uint8_array

TASK = "swin-tiny-image-classification"

# config.json's entry for this pipeline, as transformers' PIPELINE_REGISTRY would write it
CUSTOM_PIPELINES = {
    TASK: {
        "impl": "pipeline_swin_tiny.SwinTinyImageClassificationPipeline",
        "pt": ["AutoModelForImageClassification"],
        "type": "image",
    }
}


def read_image(image, timeout: float | None = None):
    """A path, URL or base64 string -> an image; a PIL image -> upright RGB, 8 bits (as `load_image` does, but
    16-bit modes scaled, not clipped); arrays and tensors unchanged. Failures name the source."""
    if isinstance(image, PIL.Image.Image):
        return PIL.Image.fromarray(rgb_uint8_array(PIL.ImageOps.exif_transpose(image)))
    if not isinstance(image, (str, os.PathLike)):
        return image
    source = os.fspath(image)
    if os.path.isfile(source):
        return read_image_file(source)  # (3, H, W) uint8
    try:
        return read_image(load_image(source, timeout=timeout))
    except Exception as error:
        shown = source if len(source) <= 200 else source[:200] + "..."
        raise ValueError(f"could not read the image {shown!r}: {error}") from error


class SwinTinyImageClassificationPipeline(ImageClassificationPipeline):
    def preprocess(self, image, timeout=None):
        model_inputs = self.image_processor(images=read_image(image, timeout), return_tensors="pt")
        return model_inputs.to(self.dtype)
