"""Readable class names for WordNet ids: the 1,000 ImageNet-1k synsets, shipped with the package.

Datasets drawn from ImageNet name their classes by WordNet id: `zh-plus/tiny-imagenet`'s 200 classes
are "n01443537", "n01629819", ... A model saved with those as `id2label` makes the pipeline and the
Hub widget answer "n01443537" instead of "goldfish". `readable_label_names` turns such ids into their
first WordNet lemma, from `imagenet_classes.tsv` (no network needed), and keeps the ids themselves so
that a config can store them beside the names (`SwinTinyConfig.wordnet_ids`).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "imagenet_classes.tsv"
_WORDNET_ID = re.compile(r"^n\d{8}$")


@cache
def _table() -> dict[str, str]:
    """WordNet id -> its lemmas ("goldfish, Carassius auratus"), in ImageNet-1k class-index order."""
    rows = [line.split("\t", 1) for line in TABLE.read_text().splitlines() if line and not line.startswith("#")]
    return dict(rows)


def imagenet_1k_wordnet_ids() -> list[str]:
    """The 1,000 ImageNet-1k WordNet ids in class-index order (sorted ids, as torchvision and timm use)."""
    return list(_table())


def lemmas(wordnet_id: str) -> str | None:
    """All lemmas of an ImageNet-1k synset ("goldfish, Carassius auratus"), or None if it is not one."""
    return _table().get(wordnet_id)


def is_wordnet_id(name: str) -> bool:
    return bool(_WORDNET_ID.match(name))


def readable_label_names(names: list[str]) -> tuple[list[str], list[str] | None]:
    """(readable names, WordNet ids) for a label set.

    If no name is a WordNet id, the names come back unchanged with None. Otherwise each known id becomes
    its first lemma ("goldfish"); ids the table does not know, and names that are not ids, stay as they
    are; where two classes would get the same name (ImageNet has two "crane"s, a bird and a machine),
    each keeps its id in brackets ("crane (n02012849)"), so names stay unique, as `label2id` needs.
    The second list holds every class's original name, in class order.
    """
    if not any(is_wordnet_id(name) for name in names):
        return list(names), None
    readable = [lemmas(name).split(",")[0].strip() if lemmas(name) else name for name in names]
    counts: dict[str, int] = {}
    for name in readable:
        counts[name] = counts.get(name, 0) + 1
    readable = [
        f"{name} ({original})" if counts[name] > 1 and name != original else name
        for name, original in zip(readable, names)
    ]
    return readable, list(names)


def label_config(names: list[str]) -> dict:
    """The config fields of a label set: id2label and label2id with readable names, and the WordNet ids (None where
    the names are no WordNet ids: given to `from_pretrained`, that drops the starting checkpoint's ids too).

    The names must be unique: label2id maps each name back to its one class index."""
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(
            f"label names must be unique (label2id maps each back to its class index), but {repeated} appear more "
            f"than once among the {len(names)} names."
        )
    readable, wordnet_ids = readable_label_names(names)
    return {
        "id2label": dict(enumerate(readable)),
        "label2id": {name: i for i, name in enumerate(readable)},
        "wordnet_ids": wordnet_ids,
    }


IMAGENET_1K_WORDNET_IDS = imagenet_1k_wordnet_ids()
