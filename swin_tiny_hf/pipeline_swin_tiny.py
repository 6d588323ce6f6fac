"""The image-classification pipeline that ships with every saved classifier (remote code).

`pipeline("image-classification", model=folder, trust_remote_code=True)` builds this subclass of
transformers' `ImageClassificationPipeline`. It differs in its inputs only:
- a local file is decoded by the training data's own decoder (`decode_image_bytes`), so inference sees the
  pixels training saw (16-bit PNGs included: transformers' `load_image` clips them to white), and a file
  that cannot be read raises a ValueError naming it, also inside a list of many;
- every image goes through `to_8_bit` (16-bit, float in [0, 1], 2-D grayscale), whatever the processor.
"""

from __future__ import annotations

import os

import PIL.Image
import PIL.ImageOps
from transformers import ImageClassificationPipeline
from transformers.image_utils import load_image

from .image_processing_swin_tiny import decode_image_bytes, rgb_uint8_array, to_8_bit

# config.json's entry for this pipeline, as transformers' PIPELINE_REGISTRY would write it
CUSTOM_PIPELINES = {
    "image-classification": {
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
    try:
        if os.path.isfile(source):
            with open(source, "rb") as file:
                return decode_image_bytes(file.read())  # (3, H, W) uint8
        return read_image(load_image(source, timeout=timeout))
    except Exception as error:
        shown = source if len(source) <= 200 else source[:200] + "..."
        raise ValueError(f"could not read the image {shown!r}: {error}") from error


class SwinTinyImageClassificationPipeline(ImageClassificationPipeline):
    def preprocess(self, image, timeout=None):
        image = to_8_bit(read_image(image, timeout))
        model_inputs = self.image_processor(images=image, return_tensors="pt")
        return model_inputs.to(self.dtype)
