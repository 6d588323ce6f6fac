"""A dataset with Tiny ImageNet's shape, written in the Hub repository's layout, for rehearsals offline.

    python -m swin_tiny_hf.training.synthetic_dataset --output_dir DIR [--train_per_class 500]
        [--valid_per_class 50] [--num_classes 200] [--train_shards 4]

`zh-plus/tiny-imagenet` on the Hub is a folder of parquet shards, `data/train-*.parquet` (100,000
rows) and `data/valid-*.parquet` (10,000), each row a 64x64 JPEG (some grayscale) and a `ClassLabel`
whose names are WordNet ids, with a README whose YAML names the splits and features. This module
writes the same layout from generated images, so that `train.py --dataset_name DIR` goes through the
very `datasets.load_dataset` call that `--dataset_name zh-plus/tiny-imagenet` does: the full-scale
rehearsal of the data path on a machine without network, and the dataset of the GPU report.

The images are learnable but not trivial: each class has its own colour, stripe orientation and
frequency, drawn at a random phase, contrast and brightness under noise. The class names are
WordNet ids of ImageNet-1k synsets (every fifth of the 1,000 for 200 classes), so the readable-name
code path runs as it does on the real data.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from ..imagenet_classes import IMAGENET_1K_WORDNET_IDS

IMAGE_SIZE = 64
GRAYSCALE_EVERY = 50  # 2% of the images are grayscale JPEGs (mode L), as some of Tiny ImageNet's are


def wordnet_ids(num_classes: int) -> list[str]:
    """num_classes WordNet ids of ImageNet-1k synsets, spread over the 1,000."""
    if not 1 <= num_classes <= len(IMAGENET_1K_WORDNET_IDS):
        raise ValueError(f"num_classes must lie in [1, {len(IMAGENET_1K_WORDNET_IDS)}], got {num_classes}.")
    step = len(IMAGENET_1K_WORDNET_IDS) // num_classes
    return [IMAGENET_1K_WORDNET_IDS[i * step] for i in range(num_classes)]


def class_images(label: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, 64, 64, 3) uint8 images of one class: its colour and stripe pattern, randomly varied."""
    class_rng = np.random.default_rng(1_000_003 * (label + 1))  # the class's own look, the same in every split
    colour = class_rng.uniform(40, 215, 3)
    angle = class_rng.uniform(0, np.pi)
    frequency = class_rng.uniform(0.1, 0.6)
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    along = x * np.cos(angle) + y * np.sin(angle)  # (64, 64)
    phase = rng.uniform(0, 2 * np.pi, (count, 1, 1))
    contrast = rng.uniform(20, 60, (count, 1, 1, 1))
    brightness = rng.uniform(-30, 30, (count, 1, 1, 1))
    stripes = np.sin(frequency * along[None] + phase)[..., None]  # (count, 64, 64, 1)
    noise = rng.normal(0, 18, (count, IMAGE_SIZE, IMAGE_SIZE, 3))
    return np.clip(colour + brightness + contrast * stripes + noise, 0, 255).astype(np.uint8)


def jpeg_bytes(array: np.ndarray, grayscale: bool) -> bytes:
    image = Image.fromarray(array.mean(-1).astype(np.uint8), mode="L") if grayscale else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def synthetic_split(num_classes: int, per_class: int, seed: int, names: list[str]) -> Dataset:
    """per_class JPEGs of each class, classes interleaved as in a shuffled split."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(num_classes):
        for i, array in enumerate(class_images(label, per_class, rng)):
            images.append({"bytes": jpeg_bytes(array, grayscale=(label + i) % GRAYSCALE_EVERY == 0), "path": None})
            labels.append(label)
    order = rng.permutation(len(labels))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=names)})
    return Dataset.from_dict(
        {"image": [images[i] for i in order], "label": [labels[i] for i in order]}, features=features
    )


def synthetic_tiny_imagenet(
    train_per_class: int = 500, valid_per_class: int = 50, num_classes: int = 200, seed: int = 0
) -> DatasetDict:
    """Splits "train" and "valid" as in zh-plus/tiny-imagenet (100,000 and 10,000 rows at the defaults)."""
    names = wordnet_ids(num_classes)
    return DatasetDict(
        train=synthetic_split(num_classes, train_per_class, seed, names),
        valid=synthetic_split(num_classes, valid_per_class, seed + 1, names),
    )


def _readme(dataset: DatasetDict) -> str:
    names = dataset["train"].features["label"].names
    lines = [
        "---",
        "dataset_info:",
        "  features:",
        "  - name: image",
        "    dtype: image",
        "  - name: label",
        "    dtype:",
        "      class_label:",
        "        names:",
    ]
    lines += [f"          '{i}': {name}" for i, name in enumerate(names)]
    lines += ["configs:", "- config_name: default", "  data_files:"]
    for split in dataset:
        lines += [f"  - split: {split}", f"    path: data/{split}-*"]
    lines += [
        "---",
        "",
        "A generated dataset with the shape and layout of zh-plus/tiny-imagenet "
        "(swin_tiny_hf.training.synthetic_dataset).",
        "",
    ]
    return "\n".join(lines)


def write_hub_layout(dataset: DatasetDict, folder: str | Path, shards: dict[str, int] | None = None) -> Path:
    """Write `dataset` as a Hub dataset repository: data/{split}-0000i-of-0000n.parquet and a README.md.

    `load_dataset(folder)` then gives the same splits, features and label names.
    """
    folder = Path(folder)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, rows in dataset.items():
        count = max(1, min((shards or {}).get(split, 1), len(rows)))
        for index in range(count):
            shard = rows.shard(count, index, contiguous=True)
            shard.to_parquet(str(folder / "data" / f"{split}-{index:05d}-of-{count:05d}.parquet"))
    (folder / "README.md").write_text(_readme(dataset))
    return folder


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--train_per_class", type=int, default=500)
    parser.add_argument("--valid_per_class", type=int, default=50)
    parser.add_argument("--num_classes", type=int, default=200)
    parser.add_argument("--train_shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> Path:
    args = get_args_parser().parse_args(argv)
    dataset = synthetic_tiny_imagenet(args.train_per_class, args.valid_per_class, args.num_classes, args.seed)
    folder = write_hub_layout(dataset, args.output_dir, {"train": args.train_shards})
    sizes = ", ".join(f"{split} {len(rows):,}" for split, rows in dataset.items())
    print(f"wrote {folder}: {sizes} images of {args.num_classes} classes")
    return folder


if __name__ == "__main__":
    main()
