"""The run's data: the two splits loaded, cut and checked, and the data loaders that feed training and
evaluation (the reference augmentation per image, Mixup/CutMix per batch, both functions of seed and epoch)."""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from datasets import DatasetDict
from torch.utils.data import DataLoader
from transformers import BaseImageProcessor

from swin_tiny_hf.training.batch_augmentation import ReferenceTrainAugmentation
from swin_tiny_hf.training.collate import MixupCutmixCollator, eval_collate
from swin_tiny_hf.training.data import DEFAULT_VALIDATION_FRACTION, load_image_dataset
from swin_tiny_hf.training.data_checks import check_data
from swin_tiny_hf.training.flag_types import FromFlags
from swin_tiny_hf.training.preemption import ignore_in_worker
from swin_tiny_hf.training.transforms import EvalTransform, TrainTransform

logger = logging.getLogger("train")


class DataError(ValueError):
    """The data cannot train this run: the message names the split, the row or file, and the flag."""


@dataclass(frozen=True)
class DataSettings(FromFlags):
    """Which data, cut how, checked how (the data flags)."""

    dataset_name: str
    dataset_config_name: str | None
    train_dir: str | None
    validation_dir: str | None
    image_column_name: str
    label_column_name: str
    validation_fraction: float
    validation_split_seed: int
    cache_dir: str | None
    max_train_samples: int | None
    max_eval_samples: int | None
    seed: int  # shuffles the training split before --max_train_samples cuts it
    skip_bad_images: bool
    per_device_train_batch_size: int  # the checks refuse a split with less than a batch
    eval_only: bool  # only the validation split is checked in full


@dataclass(frozen=True)
class LoaderSettings(FromFlags):
    """How the splits become batches (the augmentation, mixing and loader flags)."""

    seed: int
    per_device_train_batch_size: int
    per_device_eval_batch_size: int
    dataloader_num_workers: int  # resolved: default_num_workers when the flag is not given
    preemption_signals: list  # the data-loader workers ignore them (the main process handles them)
    skip_bad_images: bool
    randaugment_magnitude: int
    hflip_prob: float
    mixup_alpha: float
    cutmix_alpha: float
    mixup_prob: float
    cutmix_prob: float
    label_smoothing: float
    mix_off_first_epochs: int
    mix_off_last_epochs: int


def default_num_workers(device_type: str, num_processes: int) -> int:
    """0 on CPU (workers would steal the cores the model's threads spin on), else min(8, cores per local process)."""
    if device_type == "cpu":
        return 0
    return max(min(8, (os.cpu_count() or 1) // max(num_processes, 1)), 1)


def load_data(settings: DataSettings, accelerator: Accelerator) -> tuple[DatasetDict, list[dict]]:
    """The "train" and "validation" splits, cut to --max_train_samples / --max_eval_samples and checked
    (`data_checks.check_data`, on every process); and the bad images dropped (--skip_bad_images). Problems raise
    DataError. The main process downloads and caches first."""
    try:
        return _load_and_check_data(settings, accelerator)
    except ValueError as error:  # BadImageError included
        raise DataError(str(error)) from error


def _load_and_check_data(s: DataSettings, accelerator: Accelerator) -> tuple[DatasetDict, list[dict]]:
    with accelerator.main_process_first():
        dataset = load_image_dataset(
            s.dataset_name,
            s.dataset_config_name,
            s.train_dir,
            s.validation_dir,
            s.image_column_name,
            s.label_column_name,
            s.validation_fraction,
            s.validation_split_seed,
            s.cache_dir,
        )
    has_validation = dataset.sources["validation"].split != dataset.sources["train"].split
    if has_validation and s.validation_fraction != DEFAULT_VALIDATION_FRACTION:
        logger.warning(
            "--validation_fraction %g is not used: the dataset has its own validation split %r (only a dataset "
            "without one is split)",
            s.validation_fraction,
            dataset.sources["validation"].split,
        )
    for split, flag, limit in (
        ("train", "max_train_samples", s.max_train_samples),
        ("validation", "max_eval_samples", s.max_eval_samples),
    ):
        rows = len(dataset[split])
        if limit is not None and limit > rows:
            logger.warning("--%s %d is more than split %r has (%d rows): using all of them", flag, limit, split, rows)
    if s.max_train_samples is not None:
        kept = min(s.max_train_samples, len(dataset["train"]))
        dataset["train"] = dataset["train"].shuffle(seed=s.seed).select(range(kept))
    if s.max_eval_samples is not None:
        kept = min(s.max_eval_samples, len(dataset["validation"]))
        dataset["validation"] = dataset["validation"].select(range(kept))
    start = time.perf_counter()
    dataset, bad_images = check_data(
        dataset,
        dataset.sources,
        s.skip_bad_images,
        s.per_device_train_batch_size,
        accelerator.process_index,
        accelerator.num_processes,
        training=not s.eval_only,
    )
    logger.info("data checks: %.2f s", time.perf_counter() - start)
    return dataset, bad_images


@dataclass
class TrainingData:
    """What the epoch loop iterates: the two loaders, and the epoch-aware transform and collator."""

    train_dataloader: DataLoader
    eval_dataloader: DataLoader
    train_transform: TrainTransform
    collator: MixupCutmixCollator
    num_labels: int

    def set_epoch(self, epoch: int) -> None:
        """Augmentation, mixing and shuffling are functions of the epoch (and of the seed), for exact resume."""
        self.train_transform.set_epoch(epoch)
        self.collator.set_epoch(epoch)
        self.train_dataloader.set_epoch(epoch)


def build_eval_dataloader(
    settings: LoaderSettings, dataset: DatasetDict, image_processor: BaseImageProcessor
) -> DataLoader:
    transform = EvalTransform(image_processor, source=dataset.sources["validation"])
    return DataLoader(
        dataset["validation"].with_transform(transform),
        batch_size=settings.per_device_eval_batch_size,
        collate_fn=eval_collate,
        num_workers=settings.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=functools.partial(ignore_in_worker, settings.preemption_signals),
    )


def build_training_data(
    settings: LoaderSettings,
    dataset: DatasetDict,
    image_size: int,
    image_processor: BaseImageProcessor,
    num_epochs: int,
) -> TrainingData:
    """Both loaders, with the reference augmentation and the Mixup/CutMix collator on the training split.
    `num_epochs`: the run's length, from which --mix_off_last_epochs counts back (set it again once the
    schedule is known: `collator.num_epochs`)."""
    s = settings
    num_labels = dataset["train"].features["label"].num_classes
    augmentation = ReferenceTrainAugmentation(
        image_size,
        list(image_processor.image_mean),
        list(image_processor.image_std),
        s.randaugment_magnitude,
        s.hflip_prob,
    )
    train_transform = TrainTransform(augmentation, s.seed, dataset.sources["train"], s.skip_bad_images)
    collator = MixupCutmixCollator(
        num_labels,
        s.mixup_alpha,
        s.cutmix_alpha,
        s.mixup_prob,
        s.cutmix_prob,
        s.label_smoothing,
        s.seed,
        num_epochs,
        s.mix_off_first_epochs,
        s.mix_off_last_epochs,
    )
    train_dataloader = DataLoader(
        dataset["train"].with_transform(train_transform),
        batch_size=s.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collator,
        num_workers=s.dataloader_num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),  # with the accelerator's non_blocking copies
        worker_init_fn=functools.partial(ignore_in_worker, s.preemption_signals),
    )
    eval_dataloader = build_eval_dataloader(settings, dataset, image_processor)
    return TrainingData(train_dataloader, eval_dataloader, train_transform, collator, num_labels)
