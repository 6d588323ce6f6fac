"""Small datasets the tests make: a Tiny ImageNet-shaped one (JPEG 64x64, some grayscale, WordNet ids)."""

import io

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

WORDNET_IDS = ["n01443537", "n01629819", "n01641577", "n01644900"]


def jpeg(array: np.ndarray, mode: str) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="JPEG")
    buffer.seek(0)
    return Image.open(buffer)


def tiny_imagenet_like(train_per_class: int = 6, valid_per_class: int = 3, seed: int = 0) -> DatasetDict:
    """Splits "train" and "valid" like zh-plus/tiny-imagenet; every 5th image grayscale (mode L).

    Each class has its own mean colour, so a model can learn it.
    """
    rng = np.random.default_rng(seed)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=WORDNET_IDS)})
    splits = {}
    for split, per_class in (("train", train_per_class), ("valid", valid_per_class)):
        images, labels = [], []
        for label in range(len(WORDNET_IDS)):
            for i in range(per_class):
                base = np.full((64, 64, 3), 40 + 50 * label, dtype=np.int16)
                array = np.clip(base + rng.integers(-30, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
                if (i + label) % 5 == 0:
                    images.append(jpeg(array.mean(-1).astype(np.uint8), "L"))
                else:
                    images.append(jpeg(array, "RGB"))
                labels.append(label)
        splits[split] = Dataset.from_dict({"image": images, "label": labels}, features=features)
    return DatasetDict(splits)
