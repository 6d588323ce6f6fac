"""One call that saves a model with its image processor, as a folder that loads with transformers' Auto classes.

The model writes its weights, config (with an `auto_map` for every Auto class) and code; a classifier also names
its own pipeline (`pipeline_swin_tiny.py`, task "swin-tiny-image-classification"), which decodes files with the
training decoder and names a file it cannot read. The processor (`SwinTinyImageProcessor`) writes its config
and code. All the code is remote code beside the weights.
"""

from __future__ import annotations

import os

from transformers import PreTrainedModel

from .image_processing_swin_tiny import SwinTinyImageProcessor, make_image_processor


def save_model_and_processor(
    model: PreTrainedModel, save_directory: str | os.PathLike, image_processor: SwinTinyImageProcessor | None = None
) -> None:
    """Write weights, config (with auto_map), model code, image processor and, for a classifier, its pipeline.

    `image_processor` defaults to `make_image_processor(model.config.image_size)`. The folder then loads with
    `AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)`,
    `AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)`, `pipeline("image-classification",
    model=folder, trust_remote_code=True)` (transformers' pipeline with this processor) and
    `pipeline("swin-tiny-image-classification", model=folder, trust_remote_code=True)` (the folder's own
    pipeline). Where this package is imported, all but the last need no trust_remote_code.
    """
    if image_processor is None:
        image_processor = make_image_processor(model.config.image_size)
    model.save_pretrained(save_directory)  # a classifier also writes its pipeline (see its save_pretrained)
    image_processor.save_pretrained(save_directory)
