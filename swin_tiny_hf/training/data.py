"""Loading image-classification data as a `datasets.DatasetDict` with splits "train" and "validation".

Sources, by `load_image_dataset` arguments:
- `dataset_name="digits"`: scikit-learn's bundled handwritten digits as 64x64 RGB images (no network);
- a folder written by `save_to_disk`;
- `train_dir` / `validation_dir`: local image folders (one sub-folder per class);
- any other name: a Hub dataset through `load_dataset` (default `zh-plus/tiny-imagenet`).

Every split comes out with two columns, "image" (undecoded: the bytes are decoded in the
data-loader workers by the transforms) and "label" (a `ClassLabel`), plus "row", the row's index in
its split, which names a bad row in error messages and seeds its augmentation.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature

try:  # TorchCodec links FFmpeg (and CUDA) libraries that a machine may lack: then PIL decodes everything
    from torchcodec.decoders import decode_image
except (ImportError, OSError, RuntimeError) as error:  # pragma: no cover (depends on the machine)
    decode_image = None
    logging.getLogger(__name__).warning("TorchCodec is unusable here (%s); decoding images with PIL", error)

DEFAULT_DATASET = "zh-plus/tiny-imagenet"
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val", "test")


def digits_dataset(image_size: int = 64, seed: int = 0, validation_fraction: float = 0.2) -> DatasetDict:
    """scikit-learn's 1,797 8x8 handwritten digits, upscaled to image_size x image_size RGB PNGs, 10 classes.

    A stratified, seeded 80/20 split. Real images that need no download: the offline quick start.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for pixels in digits.images:  # (8, 8) floats in [0, 16]
        gray = PIL.Image.fromarray((pixels * (255 / 16)).astype(np.uint8), mode="L")
        images.append(gray.resize((image_size, image_size), PIL.Image.BILINEAR).convert("RGB"))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    full = Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    split = full.train_test_split(test_size=validation_fraction, stratify_by_column="label", seed=seed)
    return DatasetDict(train=split["train"], validation=split["test"])


def _is_saved_dataset(path: str) -> bool:
    folder = Path(path)
    return folder.is_dir() and ((folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists())


def load_image_dataset(
    dataset_name: str | None = DEFAULT_DATASET,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    validation_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Load, normalise columns and splits, and validate labels. See the module docstring for the sources."""
    if train_dir is not None:
        data_files = {"train": os.path.join(train_dir, "**")}
        if validation_dir is not None:
            data_files["validation"] = os.path.join(validation_dir, "**")
        raw = datasets.load_dataset("imagefolder", data_files=data_files, cache_dir=cache_dir)
    elif dataset_name is None:
        raise ValueError("give --dataset_name (a Hub dataset, 'digits' or a save_to_disk folder) or --train_dir.")
    elif dataset_name == "digits":
        raw = digits_dataset(seed=seed)
    elif _is_saved_dataset(dataset_name):
        raw = datasets.load_from_disk(dataset_name)
    else:
        raw = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    if isinstance(raw, Dataset):
        raw = DatasetDict(train=raw)
    return prepare_splits(raw, image_column, label_column, validation_fraction, seed)


def prepare_splits(
    raw: DatasetDict, image_column: str, label_column: str, validation_fraction: float, seed: int
) -> DatasetDict:
    """Pick train and validation splits, rename columns to image/label, check labels, add "row"."""
    if "train" not in raw:
        raise ValueError(f"the dataset has no 'train' split; it has {sorted(raw)}.")
    for name, split in raw.items():
        missing = [c for c in (image_column, label_column) if c not in split.column_names]
        if missing:
            raise ValueError(
                f"split {name!r} has no column {missing[0]!r}; its columns are {split.column_names}. "
                "Set --image_column_name / --label_column_name."
            )
    raw = DatasetDict({name: _standard_columns(split, image_column, label_column) for name, split in raw.items()})
    validation_name = next((n for n in VALIDATION_SPLIT_NAMES if n in raw), None)
    if validation_name is None:
        if not 0 < validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction}.")
        split = raw["train"].train_test_split(test_size=validation_fraction, stratify_by_column="label", seed=seed)
        train, validation = split["train"], split["test"]
    else:
        train, validation = raw["train"], raw[validation_name]
    if train.features["label"].names != validation.features["label"].names:
        raise ValueError("train and validation splits have different label names.")
    for name, split in (("train", train), ("validation", validation)):
        check_labels(split, name)
    return DatasetDict(
        train=train.add_column("row", list(range(len(train)))),
        validation=validation.add_column("row", list(range(len(validation)))),
    )


def _standard_columns(split: Dataset, image_column: str, label_column: str) -> Dataset:
    split = split.select_columns([image_column, label_column])
    if image_column != "image":
        split = split.rename_column(image_column, "image")
    if label_column != "label":
        split = split.rename_column(label_column, "label")
    if not isinstance(split.features["label"], ClassLabel):
        values = sorted(set(split["label"]))
        if all(isinstance(v, str) for v in values):
            label_feature = ClassLabel(names=values)
        else:  # integer ids: keep them; out-of-range ones are caught by check_labels
            label_feature = ClassLabel(num_classes=max(values) + 1)
        split = split.cast_column("label", label_feature)
    if not isinstance(split.features["image"], ImageFeature):
        raise ValueError(f"column 'image' must be a datasets Image feature, got {split.features['image']}.")
    # Decode in the data-loader workers (TorchCodec on the raw bytes), not in the main process (PIL).
    return split.cast_column("image", ImageFeature(decode=False))


def check_labels(split: Dataset, split_name: str) -> None:
    """Every label must be a class id of the split's ClassLabel (datasets allows -1 for 'missing')."""
    num_classes = split.features["label"].num_classes
    labels = np.asarray(split["label"])
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"split {split_name!r} row {row}: label {int(labels[row])} is outside the label set "
            f"[0, {num_classes}) ({bad.size} such rows)."
        )


def image_bytes(image: dict) -> bytes:
    """The encoded bytes of an undecoded datasets Image value ({"bytes": ..., "path": ...})."""
    if image.get("bytes") is not None:
        return image["bytes"]
    if image.get("path"):
        return Path(image["path"]).read_bytes()
    raise ValueError("image has neither bytes nor a path")


def decode_rgb(image: dict, split: str, row: int) -> torch.Tensor:
    """An undecoded datasets Image value -> (3, H, W) uint8 RGB (grayscale, palette and alpha included).

    TorchCodec decodes JPEG, PNG, WebP, GIF, AVIF and HEIC (torchvision's decoders are deprecated since
    0.29); other formats (BMP, TIFF, ...) go through PIL, as everything does where TorchCodec cannot be
    loaded. An image neither can read raises a ValueError naming the split and row, so a bad file in a
    dataset of 100,000 can be found.
    """
    try:
        data = image_bytes(image)
        if decode_image is not None:
            try:
                return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")
            except (ValueError, RuntimeError):  # a format TorchCodec does not read, or data it rejects
                pass
        with PIL.Image.open(io.BytesIO(data)) as opened:
            return torch.from_numpy(np.array(opened.convert("RGB"))).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    except Exception as error:
        raise ValueError(f"could not decode the image of split {split!r} row {row}: {error}") from error
