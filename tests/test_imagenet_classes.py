"""Readable class names for WordNet ids, from the table shipped with the package."""

import pytest

from swin_tiny_hf import SwinTinyConfig
from swin_tiny_hf.imagenet_classes import IMAGENET_1K_WORDNET_IDS, lemmas, readable_label_names

from conftest import tiny_config


def test_the_table_covers_imagenet_1k_in_class_index_order():
    assert len(IMAGENET_1K_WORDNET_IDS) == 1000 == len(set(IMAGENET_1K_WORDNET_IDS))
    assert IMAGENET_1K_WORDNET_IDS == sorted(IMAGENET_1K_WORDNET_IDS)  # torchvision's and timm's class order
    assert IMAGENET_1K_WORDNET_IDS[:2] == ["n01440764", "n01443537"] and IMAGENET_1K_WORDNET_IDS[-1] == "n15075141"
    assert lemmas("n01443537") == "goldfish, Carassius auratus"
    assert lemmas("n04596742") == "wok" and lemmas("n99999999") is None


def test_wordnet_ids_become_unique_first_lemmas_and_stay_recoverable():
    names, ids = readable_label_names(["n01443537", "n02012849", "n03126707", "n99999999", "cat"])
    assert names == ["goldfish", "crane (n02012849)", "crane (n03126707)", "n99999999", "cat"]
    assert ids == ["n01443537", "n02012849", "n03126707", "n99999999", "cat"]
    assert readable_label_names(["0", "1"]) == (["0", "1"], None)  # not WordNet ids: unchanged
    # the whole of ImageNet-1k: 1,000 distinct names
    assert len(set(readable_label_names(IMAGENET_1K_WORDNET_IDS)[0])) == 1000


def test_the_config_keeps_the_ids_beside_the_names(tmp_path):
    names, ids = readable_label_names(["n01443537", "n01629819"])
    config = tiny_config(
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}, wordnet_ids=ids
    )
    config.save_pretrained(tmp_path)
    loaded = SwinTinyConfig.from_pretrained(tmp_path)
    assert loaded.wordnet_ids == ["n01443537", "n01629819"] and loaded.id2label[0] == "goldfish"
    # a new head (num_labels replaces id2label): the ids named the old head's classes
    assert SwinTinyConfig.from_pretrained(tmp_path, num_labels=7).wordnet_ids is None
    with pytest.raises(ValueError, match="wordnet_ids has 1 entries but the model has 2 labels"):
        tiny_config(id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1}, wordnet_ids=["n01443537"])
    with pytest.raises(ValueError, match="wordnet_ids must be a list of strings"):
        tiny_config(id2label={0: "a"}, label2id={"a": 0}, wordnet_ids="n01443537")
