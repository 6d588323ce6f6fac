"""Loading image-classification data as a `datasets.DatasetDict` with splits "train" and "validation".

Sources, by `load_image_dataset` arguments:
- `dataset_name="digits"`: scikit-learn's bundled handwritten digits as 64x64 RGB images (no network);
- a folder written by `save_to_disk`;
- `train_dir` / `validation_dir`: local image folders (one sub-folder per class);
- any other name: a Hub dataset through `load_dataset` (default `zh-plus/tiny-imagenet`).

Every split comes out with two columns, "image" (undecoded: the bytes are decoded in the
data-loader workers by the transforms) and "label" (a `ClassLabel`), plus "row", the row's index in
its split, which names a bad row in error messages and seeds its augmentation.

Labels: every split is expressed in the training split's label set. Class names are read per split
before `datasets` casts the splits to one feature (the Hub's parquet layout: each shard's own schema), so
a validation split that lists train's classes in another order, or a subset of them, is mapped to train's
ids by name; classes that train lacks are refused, naming them. Integer labels share one label set, of
the largest id in any split + 1.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import fsspec
import numpy as np
import PIL.Image
import pyarrow.parquet as pq
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature

from ..image_processing_swin_tiny import decode_image_bytes

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Shard:
    """One data file of a split: its path and the split's rows [start, stop) that it holds."""

    path: str
    start: int
    stop: int


def describe_row(split: str, row: int, path: str | None = None, shards: tuple[Shard, ...] = ()) -> str:
    """ "split 'train' row 1234 (file '...')" or "(shard '.../train-00001-of-00004.parquet', its row 234)"."""
    where = f"split {split!r} row {row}"
    if path:
        return f"{where} (file {path!r})"
    shard = next((s for s in shards if s.start <= row < s.stop), None)
    return f"{where} (shard {shard.path!r}, its row {row - shard.start})" if shard else where


def _parquet_files(dataset_name: str, config_name: str | None, cache_dir: str | None) -> dict[str, list[str]]:
    """The parquet data files of each split, in load order, as `datasets` resolves them; {} for other layouts."""
    try:
        builder = datasets.load_dataset_builder(dataset_name, config_name, cache_dir=cache_dir)
    except Exception as error:  # the load itself reports what is wrong, with datasets' own message
        logger.debug("could not resolve the data files of %s: %s", dataset_name, error)
        return {}
    data_files = builder.config.data_files or {}
    return {
        str(split): [str(f) for f in files]
        for split, files in data_files.items()
        if files and all(str(f).endswith(".parquet") for f in files)
    }


def read_split_metadata(
    parquet_files: dict[str, list[str]], label_column: str
) -> tuple[dict[str, list[str]], dict[str, tuple[Shard, ...]]]:
    """From the parquet footers only (no data read): each split's own class names, and its shards' row spans.

    `load_dataset` casts every split to one `Features`, the README's or the first file's, so a split whose
    shards name their classes in another order arrives with train's names on its own ids. The names each
    shard was written with sit in its schema's "huggingface" metadata; shards of one split must agree."""
    names, shards = {}, {}
    for split, files in parquet_files.items():
        spans, split_names, start = [], {}, 0
        for path in files:
            with fsspec.open(path, "rb") as file:
                parquet = pq.ParquetFile(file)
                rows, metadata = parquet.metadata.num_rows, parquet.schema_arrow.metadata or {}
            spans.append(Shard(path, start, start + rows))
            start += rows
            info = json.loads(metadata.get(b"huggingface", b"{}")).get("info", {})
            feature = info.get("features", {}).get(label_column, {})
            if feature.get("_type") == "ClassLabel" and feature.get("names") is not None:
                split_names[path] = list(feature["names"])
        shards[split] = tuple(spans)
        distinct = {tuple(n) for n in split_names.values()}
        if len(distinct) > 1:
            first, *others = split_names.items()
            other = next(p for p, n in others if n != first[1])
            raise ValueError(
                f"the shards of split {split!r} name their classes differently: {first[0]!r} has "
                f"{_shorten(first[1])}, {other!r} has {_shorten(split_names[other])}. Rewrite them with one "
                "ClassLabel."
            )
        if distinct and len(split_names) == len(files):
            names[split] = list(distinct.pop())
    return names, shards


def _shorten(items: list, limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}] ({len(items)})"


# The part of split 'train' held out for validation when a dataset has no validation split of its own.
DEFAULT_VALIDATION_FRACTION = 0.1


def load_image_dataset(
    dataset_name: str | None = DEFAULT_DATASET,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    seed: int = 0,
    cache_dir: str | None = None,
) -> DatasetDict:
    """Load, normalise columns and splits, and unify and check labels. See the module docstring for the sources.

    The returned DatasetDict carries `sources`: {"train": SplitSource, "validation": SplitSource}, the split of
    the dataset each one's rows come from and, for parquet datasets, its shards (to name a bad row's file)."""
    own_names, shards = {}, {}
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
        parquet_files = _parquet_files(dataset_name, dataset_config_name, cache_dir)
        own_names, shards = read_split_metadata(parquet_files, label_column)
        raw = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    if isinstance(raw, Dataset):
        raw = DatasetDict(train=raw)
    return prepare_splits(raw, image_column, label_column, validation_fraction, seed, own_names, shards)


@dataclass(frozen=True)
class SplitSource:
    """Where a prepared split's rows come from: the dataset's split (its "row" column indexes it) and its shards."""

    split: str
    shards: tuple[Shard, ...] = ()

    def describe(self, row: int, path: str | None = None) -> str:
        return describe_row(self.split, row, path, self.shards)


def prepare_splits(
    raw: DatasetDict,
    image_column: str,
    label_column: str,
    validation_fraction: float,
    seed: int,
    own_names: dict[str, list[str]] | None = None,
    shards: dict[str, tuple[Shard, ...]] | None = None,
) -> DatasetDict:
    """Pick train and validation splits, rename columns to image/label, unify and check labels, add "row".

    `own_names`: the class names each split was written with, where they may differ from its loaded feature.
    "row" is the row's index in the dataset's split, also where validation is held out of train."""
    if "train" not in raw:
        raise ValueError(f"the dataset has no 'train' split; it has {sorted(raw)}.")
    validation_name = next((n for n in VALIDATION_SPLIT_NAMES if n in raw), None)
    kept = {"train": raw["train"]}
    if validation_name is not None:
        kept[validation_name] = raw[validation_name]
    for name, split in kept.items():
        missing = [c for c in (image_column, label_column) if c not in split.column_names]
        if missing:
            raise ValueError(
                f"split {name!r} has no column {missing[0]!r}; its columns are {split.column_names}. "
                "Set --image_column_name / --label_column_name."
            )
    kept = {name: _standard_columns(split, image_column, label_column) for name, split in kept.items()}
    kept = unify_labels(kept, own_names or {})
    kept = {name: split.add_column("row", list(range(len(split)))) for name, split in kept.items()}
    shards = shards or {}
    train_source = SplitSource("train", shards.get("train", ()))
    if validation_name is None:
        if not 0 < validation_fraction < 1:
            raise ValueError(f"--validation_fraction must lie in (0, 1), got {validation_fraction}.")
        try:
            split = kept["train"].train_test_split(
                test_size=validation_fraction, stratify_by_column="label", seed=seed
            )
        except ValueError as error:
            raise ValueError(
                f"the dataset has no validation split, and --validation_fraction {validation_fraction} of split "
                f"'train' ({len(kept['train'])} rows) cannot make one: {error}"
            ) from error
        dataset = DatasetDict(train=split["train"], validation=split["test"])
        dataset.sources = {"train": train_source, "validation": train_source}
    else:
        dataset = DatasetDict(train=kept["train"], validation=kept[validation_name])
        validation_source = SplitSource(validation_name, shards.get(validation_name, ()))
        dataset.sources = {"train": train_source, "validation": validation_source}
    return dataset


def _standard_columns(split: Dataset, image_column: str, label_column: str) -> Dataset:
    split = split.select_columns([image_column, label_column])
    if image_column != "image":
        split = split.rename_column(image_column, "image")
    if label_column != "label":
        split = split.rename_column(label_column, "label")
    if not isinstance(split.features["image"], ImageFeature):
        raise ValueError(f"column 'image' must be a datasets Image feature, got {split.features['image']}.")
    # Decode in the data-loader workers (TorchCodec on the raw bytes), not in the main process (PIL).
    return split.cast_column("image", ImageFeature(decode=False))


def _label_kind(feature) -> str:
    if isinstance(feature, ClassLabel):
        return "names"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "strings"
    if isinstance(feature, Value) and (feature.dtype.startswith("int") or feature.dtype.startswith("uint")):
        return "integers"
    raise ValueError(f"column 'label' must hold class names or integer class ids, got the feature {feature}.")


def unify_labels(splits: dict[str, Dataset], own_names: dict[str, list[str]]) -> dict[str, Dataset]:
    """Every split's labels as ids of one ClassLabel, train's (see the module docstring)."""
    kinds = {name: _label_kind(split.features["label"]) for name, split in splits.items()}
    if kinds["train"] == "integers":
        return _unify_integer_labels(splits, kinds)
    train_names = _class_names(splits["train"], own_names.get("train"))
    label_set = ClassLabel(names=train_names)
    train_ids = {class_name: index for index, class_name in enumerate(train_names)}
    unified = {}
    for name, split in splits.items():
        if kinds[name] == "integers":  # ids of train's label set; out-of-range ones are caught by check_labels
            unified[name] = _relabel(split, name, None, label_set)
            continue
        names = _class_names(split, own_names.get(name))
        lacking = [n for n in names if n not in train_ids]
        if lacking:
            row_names = _string_labels(split, names)
            used = set(row_names) & set(lacking)
            if used:
                rows = np.flatnonzero(np.isin(np.asarray(row_names, dtype=object), list(used)))
                raise ValueError(
                    f"split {name!r} has {len(used)} class(es) that split 'train' lacks: {_shorten(sorted(used))}, "
                    f"in {rows.size} rows (the first: row {int(rows[0])}). A model cannot learn classes it never "
                    "sees: remove those rows, or add training images of those classes."
                )
        if kinds[name] == "names" and names == train_names:
            unified[name] = _relabel(split, name, None, label_set)
            continue
        if kinds[name] == "names":
            logger.info(
                "split %r lists %d classes, train %d, in another order or a subset: its labels are mapped to "
                "train's ids by class name",
                name,
                len(names),
                len(train_names),
            )
        ids = np.array([train_ids.get(n, -1) for n in names], dtype=np.int64)
        unified[name] = _relabel(split, name, (names, ids), label_set)
    return unified


_KIND_WORDS = {"integers": "integer class ids", "names": "a ClassLabel of class names", "strings": "class names"}


def _unify_integer_labels(splits: dict[str, Dataset], kinds: dict[str, str]) -> dict[str, Dataset]:
    """Training labels that are integer class ids: every split must hold ids too (ids cannot be matched to
    names), and only ids that train has: a class the model never sees cannot be learnt, and an id beyond train's
    would silently widen the classifier. The label set is [0, train's largest id]."""
    for name, kind in kinds.items():
        if kind != "integers":
            raise ValueError(
                f"split 'train' holds {_KIND_WORDS['integers']} but split {name!r} holds {_KIND_WORDS[kind]}: the "
                "two cannot be matched. Give both splits the same kind of label (class names in both, or the same "
                "integer ids in both)."
            )
    train_labels = column_array(splits["train"], "label").astype(np.int64)
    check_labels(train_labels, np.iinfo(np.int64).max, "train")  # a missing (-1) training label, named by row
    label_set = ClassLabel(num_classes=int(train_labels.max(initial=-1)) + 1 or 1)
    known = np.unique(train_labels)
    unified = {}
    for name, split in splits.items():
        if name != "train":
            values = column_array(split, "label").astype(np.int64)
            unknown = np.flatnonzero((values >= 0) & ~np.isin(values, known))
            if unknown.size:
                ids = sorted({int(v) for v in values[unknown]})
                raise ValueError(
                    f"split {name!r} has {len(ids)} class id(s) that split 'train' lacks: {_shorten(ids)}, in "
                    f"{unknown.size} rows (the first: row {int(unknown[0])}). A model cannot learn classes it never "
                    "sees: remove those rows, or add training images of those classes."
                )
        unified[name] = _relabel(split, name, None, label_set)
    return unified


def _class_names(split: Dataset, own: list[str] | None) -> list[str]:
    """A split's class names: as written (own), as its ClassLabel says, or its sorted distinct strings."""
    feature = split.features["label"]
    if own is not None:
        return list(own)
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    return sorted({v for v in split["label"] if v is not None})


def _string_labels(split: Dataset, names: list[str]) -> list:
    """Each row's class name (None where the label is missing)."""
    values = split["label"]
    if isinstance(split.features["label"], ClassLabel):
        return [names[v] if 0 <= v < len(names) else None for v in values]
    return list(values)


def column_array(split: Dataset, column: str) -> np.ndarray:
    """A numeric column of the split's rows (its selection, if any) as a NumPy array, read through Arrow: as a
    Python list, 100,000 labels take a second."""
    values = split.data.table.column(column)
    if split._indices is not None:  # shuffle / select keep an indices mapping over the table
        values = values.take(split._indices.column(0))
    return values.to_numpy()


def _relabel(
    split: Dataset, split_name: str, mapping: tuple[list[str], np.ndarray] | None, label_set: ClassLabel
) -> Dataset:
    """The split with its labels as ids of `label_set`: the same ids (mapping None), or mapped by class name.
    A missing label, or one outside the label set, is refused naming its row."""
    if mapping is None:
        values = column_array(split, "label").astype(np.int64)
        check_labels(values, label_set.num_classes, split_name)
        if split.features["label"] == label_set:
            return split
    else:
        names, ids = mapping
        if isinstance(split.features["label"], ClassLabel):  # its own ids -> train's, through the names
            own = column_array(split, "label").astype(np.int64)
            check_labels(own, len(ids), split_name)
            values = ids[own]
        else:  # class names as strings
            train_ids = {class_name: index for index, class_name in enumerate(label_set.names)}
            values = np.array([train_ids.get(v, -1) if v is not None else -1 for v in split["label"]])
            check_labels(values, label_set.num_classes, split_name)
    return split.remove_columns("label").add_column("label", values.tolist(), feature=label_set)


def check_labels(labels: np.ndarray, num_classes: int, split_name: str) -> None:
    """Every label must be a class id in [0, num_classes) (datasets allows -1 for 'missing': not for training)."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        row, value = int(bad[0]), int(labels[bad[0]])
        what = "missing (-1)" if value == -1 else f"{value}, outside the label set [0, {num_classes})"
        raise ValueError(
            f"split {split_name!r} row {row}: the label is {what} ({bad.size} such rows). Every row needs a class."
        )


class BadImageError(ValueError):
    """An image that cannot be decoded, or a row without one; the message names the split, row and file or shard."""


def image_bytes(image: dict | None) -> bytes:
    """The encoded bytes of an undecoded datasets Image value ({"bytes": ..., "path": ...})."""
    if image is None:
        raise ValueError("the row has no image (None)")
    if image.get("bytes") is not None:
        return image["bytes"]
    if image.get("path"):
        return Path(image["path"]).read_bytes()
    raise ValueError("the image has neither bytes nor a path")


def decode_rgb(image: dict | None, split: str, row: int, source: SplitSource | None = None) -> torch.Tensor:
    """An undecoded datasets Image value -> (3, H, W) uint8 RGB (grayscale, palette, alpha, 16-bit, the first
    frame of an animation), with the decoder that inference uses too (`decode_image_bytes`).

    An image that cannot be read raises BadImageError naming the split, the row and the file or shard, so that
    a bad file in a dataset of 100,000 can be found."""
    try:
        return decode_image_bytes(image_bytes(image))
    except Exception as error:
        path = image.get("path") if isinstance(image, dict) else None
        where = source.describe(row, path) if source is not None else describe_row(split, row, path)
        raise BadImageError(f"could not decode the image of {where}: {error}") from error
