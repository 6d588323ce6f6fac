"""The model a run trains, and its image processor: new from the flags, or --model_name_or_path's weights; either
way with the dataset's labels, and the processor at the size the run trains at."""

from __future__ import annotations

import logging

from transformers import AutoImageProcessor, BaseImageProcessor

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification, make_image_processor
from swin_tiny_hf.imagenet_classes import label_config

logger = logging.getLogger("train")


class StartingModelError(ValueError):
    """--model_name_or_path's weights do not fit the run's model."""


def model_config(
    model_name_or_path: str | None,
    overrides: dict,
    label_names: list[str] | None = None,
    cache_dir: str | None = None,
) -> SwinTinyConfig:
    """The run's model config: `model_name_or_path`'s (or the default one) with the model flags (`overrides`) and
    the dataset's labels applied, built and so validated as one config: a bad size is refused with the config's
    own message whether or not the run starts from a checkpoint.

    WordNet ids ("n01443537", Tiny ImageNet's) become readable names ("goldfish") in id2label, and the ids
    are kept in config.wordnet_ids (None for other names: the starting checkpoint's ids go with its head)."""
    values = dict(overrides)
    if label_names is not None:
        values.update(label_config(label_names))
        # The recipe's labels are soft targets (Mixup, CutMix, label smoothing): a soft-target cross-entropy. Where
        # problem_type is None the model reads float labels as multi-label targets (transformers' rule).
        values["problem_type"] = "single_label_classification"
    if model_name_or_path is None:
        return SwinTinyConfig(**values)
    return SwinTinyConfig.from_pretrained(model_name_or_path, cache_dir=cache_dir, **values)


def build_model(
    model_name_or_path: str | None,
    overrides: dict,
    label_names: list[str],
    *,
    ignore_mismatched_sizes: bool = False,
    attn_implementation: str = "sdpa",
    cache_dir: str | None = None,
) -> SwinTinyForImageClassification:
    """A new model from `overrides`, or `model_name_or_path`'s weights; either way with the dataset's labels."""
    config = model_config(model_name_or_path, overrides, label_names, cache_dir)
    if model_name_or_path is None:
        return SwinTinyForImageClassification._from_config(config, attn_implementation=attn_implementation)
    try:
        return SwinTinyForImageClassification.from_pretrained(
            model_name_or_path,
            config=config,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            attn_implementation=attn_implementation,
            cache_dir=cache_dir,
        )
    except RuntimeError as error:
        if "size mismatch" not in str(error) and "ignore_mismatched_sizes" not in str(error):
            raise
        raise StartingModelError(
            f"--model_name_or_path {model_name_or_path!r}: its weights do not fit the run's model "
            f"({config.num_labels} classes from the dataset; transformers' report above names the tensors). "
            "Pass --ignore_mismatched_sizes to start those weights (a new classifier head) afresh."
        ) from None


def load_image_processor(model_name_or_path: str | None, image_size: int, cache_dir: str | None = None):
    """The run's image processor, at the size the run trains at (`image_size`, the model's): the starting
    checkpoint's if it has one (its normalisation), else the Tiny ImageNet one. Evaluation, best/ and the final
    model all use it, so one size holds everywhere, also when fine-tuning at another size than the checkpoint's."""
    if model_name_or_path is None:
        return make_image_processor(image_size)
    try:  # a local folder, or a Hub id (from the cache when offline)
        processor: BaseImageProcessor = AutoImageProcessor.from_pretrained(model_name_or_path, cache_dir=cache_dir)
    except OSError:  # the checkpoint has no image processor (a converted one, say)
        logger.info("%s has no image processor: the Tiny ImageNet one, at %d px", model_name_or_path, image_size)
        return make_image_processor(image_size)
    size = {"height": image_size, "width": image_size}
    if dict(processor.size) != size:
        logger.info(
            "%s's image processor resizes to %s; this run trains at %d px: its processor resizes to %d x %d",
            model_name_or_path,
            dict(processor.size),
            image_size,
            image_size,
            image_size,
        )
        processor.size = size
    if getattr(processor, "do_center_crop", False):  # a crop after the resize would change the size again
        processor.crop_size = size
    return processor
