"""Bad data caught before training, named, and never silently wrong: label sets that differ between splits,
rows without an image, files that do not decode, splits too small to train or evaluate."""

import io
import logging

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_dataset
from datasets import Image as ImageFeature
from PIL import Image

from swin_tiny_hf.training.batch_augmentation import ReferenceTrainAugmentation
from swin_tiny_hf.training.collate import MixupCutmixCollator
from swin_tiny_hf.training.data import BadImageError, decode_rgb, load_image_dataset, prepare_splits
from swin_tiny_hf.training.data_checks import SkippedImages, check_data, missing_images
from swin_tiny_hf.training.synthetic_dataset import write_hub_layout
from swin_tiny_hf.training.transforms import TrainTransform

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def png(colour=(0, 0, 0), size=(8, 8)) -> dict:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def split(labels, names=None, images=None, dtype=None) -> Dataset:
    label = ClassLabel(names=names) if names is not None else Value(dtype or "int64")
    images = images if images is not None else [png((10 * i % 255, 0, 0)) for i in range(len(labels))]
    return Dataset.from_dict(
        {"image": images, "label": labels}, features=Features({"image": ImageFeature(), "label": label})
    )


# ---------------------------------------------------------------------------------------------- labels
def test_validation_classes_in_another_order_or_a_subset_are_mapped_by_name(tmp_path):
    """The Hub's parquet layout: load_dataset casts every split to one ClassLabel (train's), keeping the ids."""
    train = split([0, 1, 2, 0, 1, 2], names=["cat", "dog", "fox"])
    valid = split([0, 1, 0, 1], names=["fox", "cat"])  # a subset, in another order: fox, cat, fox, cat
    folder = write_hub_layout(DatasetDict(train=train, valid=valid), tmp_path / "hub")
    raw = load_dataset(str(folder))  # control: what datasets alone gives, cat, dog, cat, dog
    assert [raw["valid"].features["label"].int2str(i) for i in raw["valid"]["label"]] == ["cat", "dog"] * 2
    data = load_image_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    names = data["validation"].features["label"].names
    assert names == ["cat", "dog", "fox"]
    assert [names[i] for i in data["validation"]["label"]] == ["fox", "cat", "fox", "cat"]
    assert data.sources["validation"].split == "valid"
    assert data.sources["validation"].shards[0].path.endswith("valid-00000-of-00001.parquet")


def test_validation_classes_that_train_lacks_are_refused_by_name(tmp_path):
    train = split([0, 1, 0, 1], names=["cat", "dog"])
    valid = split([0, 1, 2, 2], names=["cat", "emu", "yak"])
    folder = write_hub_layout(DatasetDict(train=train, valid=valid), tmp_path / "hub")
    with pytest.raises(
        ValueError, match=r"split 'valid' has 2 class\(es\) that split 'train' lacks: \['emu', 'yak'\]"
    ):
        load_image_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    DatasetDict(train=train, validation=split(["cat", "emu"], dtype="string")).save_to_disk(tmp_path / "strings")
    with pytest.raises(ValueError, match=r"split 'validation' has 1 class\(es\) that split 'train' lacks: \['emu'\]"):
        load_image_dataset(str(tmp_path / "strings"))


def test_shards_of_one_split_that_name_classes_differently_are_refused(tmp_path):
    folder = write_hub_layout(
        DatasetDict(train=split([0, 1], names=["a", "b"]), valid=split([0], names=["a", "b"])), tmp_path / "hub"
    )
    split([0, 1], names=["b", "a"]).to_parquet(str(folder / "data" / "train-00001-of-00001x.parquet"))
    (folder / "README.md").write_text((folder / "README.md").read_text().replace("data/train-*", "data/train-0000*"))
    with pytest.raises(ValueError, match=r"the shards of split 'train' name their classes differently"):
        load_image_dataset(str(folder), cache_dir=str(tmp_path / "cache"))


def test_integer_labels_share_one_label_set_and_bad_ids_name_their_row(tmp_path):
    DatasetDict(train=split([0, 1, 2, 3, 0, 1]), validation=split([0, 1, 2])).save_to_disk(tmp_path / "ints")
    data = load_image_dataset(str(tmp_path / "ints"))  # validation lacks class 3: the same 4 classes
    assert data["train"].features["label"] == data["validation"].features["label"] == ClassLabel(num_classes=4)
    DatasetDict(train=split([0, 1, 0, 1]), validation=split([0, -1, 1, -1])).save_to_disk(tmp_path / "negative")
    with pytest.raises(ValueError, match=r"split 'validation' row 1: the label is missing \(-1\) \(2 such rows\)"):
        load_image_dataset(str(tmp_path / "negative"))
    DatasetDict(train=split([0, 1, 0, 7]), validation=split([0, 1])).save_to_disk(tmp_path / "wide")
    assert load_image_dataset(str(tmp_path / "wide"))["validation"].features["label"].num_classes == 8


def test_integer_training_labels_need_integer_labels_train_has_in_every_split(tmp_path):
    """Integer ids cannot be matched to class names, and an id only validation has is a class never trained."""
    DatasetDict(train=split([0, 1, 0, 1]), validation=split(["cat", "dog"], dtype="string")).save_to_disk(
        tmp_path / "mixed"
    )
    with pytest.raises(
        ValueError, match=r"split 'train' holds integer class ids but split 'validation' holds class names: "
    ):
        load_image_dataset(str(tmp_path / "mixed"))
    DatasetDict(train=split([0, 1, 0, 1]), validation=split([0, 1], names=["cat", "dog"])).save_to_disk(
        tmp_path / "classlabel"
    )
    with pytest.raises(ValueError, match=r"split 'validation' holds a ClassLabel of class names"):
        load_image_dataset(str(tmp_path / "classlabel"))
    DatasetDict(train=split([0, 1, 0, 3]), validation=split([0, 2, 1, 5, 2])).save_to_disk(tmp_path / "unseen")
    with pytest.raises(
        ValueError,
        match=r"split 'validation' has 2 class id\(s\) that split 'train' lacks: \[2, 5\] \(2\), in 3 rows "
        r"\(the first: row 1\)",
    ):
        load_image_dataset(str(tmp_path / "unseen"))
    DatasetDict(train=split([0, -1, 1]), validation=split([0, 1])).save_to_disk(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"split 'train' row 1: the label is missing \(-1\)"):
        load_image_dataset(str(tmp_path / "missing"))


def test_string_labels_take_train_names():
    raw = DatasetDict(
        train=split(["dog", "cat", "dog", "cat"], dtype="string"), validation=split(["dog", "dog"], dtype="string")
    )
    prepared = prepare_splits(raw, "image", "label", 0.1, 0)
    assert prepared["validation"].features["label"].names == ["cat", "dog"]
    assert prepared["validation"]["label"] == [1, 1]


# -------------------------------------------------------------------------------------------- images
def test_rows_without_an_image_are_found_from_the_table_alone(tmp_path):
    gone, empty = tmp_path / "gone.png", tmp_path / "empty.png"
    Image.new("RGB", (4, 4)).save(gone)
    empty.write_bytes(b"")
    images = [png(), None, {"bytes": b"", "path": None}, png(), {"bytes": None, "path": str(gone)}]
    images.append({"bytes": None, "path": str(empty)})
    raw = DatasetDict(train=split([0, 1, 0, 1, 0, 1], images=images))
    gone.unlink()  # an image folder whose file went away after the dataset was built
    data = prepare_splits(raw, "image", "label", 0.5, 0)
    everything = {}
    for name in ("train", "validation"):
        everything.update(missing_images(data[name]))
    assert everything == {
        1: "the row has no image (None)",
        2: "the image has no bytes (an empty file)",
        4: f"the file {str(tmp_path / 'gone.png')!r} cannot be read: No such file or directory",
        5: f"the file {str(empty)!r} is empty",
    }
    # a selection (shuffle, select) sees its own rows only
    train_rows = data["train"]["row"]
    bad_in_train = {row for row in train_rows if row in everything}
    good = train_rows.index(next(row for row in train_rows if row not in everything))
    assert bad_in_train and missing_images(data["train"].select([good])) == {}
    reordered = data["train"].shuffle(seed=1)
    assert missing_images(reordered) == {row: everything[row] for row in bad_in_train}


def test_decode_errors_name_split_row_and_file_or_shard(tmp_path):
    with pytest.raises(BadImageError, match=r"split 'train' row 3: the row has no image \(None\)"):
        decode_rgb(None, "train", 3)
    with pytest.raises(BadImageError, match=r"row 4: the image has no bytes"):
        decode_rgb({"bytes": b"", "path": None}, "train", 4)
    with pytest.raises(BadImageError, match=r"split 'valid' row 2 \(file 'x/broken\.jpg'\)"):
        decode_rgb({"bytes": b"not an image", "path": "x/broken.jpg"}, "valid", 2)
    images = [png(), png(), {"bytes": b"not an image", "path": None}, png()]
    folder = write_hub_layout(
        DatasetDict(train=split([0, 1, 0, 1], names=["a", "b"], images=images)), tmp_path / "hub", {"train": 2}
    )
    data = load_image_dataset(str(folder), cache_dir=str(tmp_path / "cache"), validation_fraction=0.5)
    source = data.sources["train"]
    with pytest.raises(
        BadImageError, match=r"split 'train' row 2 \(shard '.*train-00001-of-00002\.parquet', its row 0\)"
    ):
        decode_rgb(images[2], "train", 2, source)


def tin_like(tmp_path, train_images=None, valid_images=None, per_class=4):
    names = ["a", "b"]
    train_labels = [i % 2 for i in range(2 * per_class)]
    train_images = train_images or [png((30 * i, 0, 0)) for i in range(len(train_labels))]
    valid_images = valid_images or [png((0, 40 * i, 0)) for i in range(4)]
    return write_hub_layout(
        DatasetDict(
            train=split(train_labels, names=names, images=train_images),
            valid=split([0, 1, 0, 1], names=names, images=valid_images),
        ),
        tmp_path / "hub",
    )


def test_check_data_validates_the_validation_split_and_drops_bad_rows_only_when_asked(tmp_path):
    valid = [png(), {"bytes": b"GIF89a broken", "path": None}, png(), None]
    data = load_image_dataset(str(tin_like(tmp_path, valid_images=valid)), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(BadImageError) as refused:
        check_data(DatasetDict(data), data.sources, skip_bad_images=False, per_device_batch=2)
    message = str(refused.value)
    assert message.startswith("2 bad images in split 'valid': could not decode the image of split 'valid' row 1")
    assert "valid-00000-of-00001.parquet" in message and "row 3" in message and "--skip_bad_images" in message
    checked, bad = check_data(DatasetDict(data), data.sources, skip_bad_images=True, per_device_batch=2)
    assert checked["validation"]["row"] == [0, 2]
    assert [(b["split"], b["row"], b["dropped_from"]) for b in bad] == [
        ("valid", 1, "validation"),
        ("valid", 3, "validation"),
    ]


def test_sizes_are_checked_against_the_batch_and_an_empty_validation(tmp_path):
    data = load_image_dataset(str(tin_like(tmp_path)), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"split 'train' has 8 rows .* fewer than one global batch of 16 "):
        check_data(DatasetDict(data), data.sources, False, per_device_batch=8, num_processes=2)
    empty = DatasetDict(train=data["train"], validation=data["validation"].select([]))
    with pytest.raises(ValueError, match=r"split 'validation' has no rows"):
        check_data(empty, data.sources, False, per_device_batch=2)


def test_a_validation_class_without_training_images_is_warned_about(tmp_path, caplog):
    for split_name, classes in (("train", ("cat", "dog")), ("val", ("cat", "dog", "emu"))):
        for name in classes:
            (tmp_path / split_name / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / split_name / name / f"{i}.png")
    data = load_image_dataset(None, train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"))
    with caplog.at_level(logging.WARNING):
        check_data(DatasetDict(data), data.sources, False, per_device_batch=2)
    assert "1 validation classes have no training image: emu (2 validation rows)" in caplog.text


def test_training_transform_skips_and_the_collator_reports_bad_images(tmp_path):
    images = [png((i * 20, 0, 0), (16, 16)) for i in range(4)]
    images[2] = {"bytes": b"\x89PNG broken", "path": None}
    data = load_image_dataset(
        str(tin_like(tmp_path, train_images=images, per_class=2)), cache_dir=str(tmp_path / "cache")
    )
    rows = data["train"].sort("row")[0:4]
    batch = {"image": rows["image"], "label": rows["label"], "row": rows["row"]}
    augmentation = ReferenceTrainAugmentation(16, MEAN, STD)
    with pytest.raises(BadImageError, match=r"split 'train' row 2 \(shard .*train-00000-of-00001\.parquet"):
        TrainTransform(augmentation, 0, data.sources["train"])(batch)
    out = TrainTransform(augmentation, 0, data.sources["train"], skip_bad_images=True)(batch)
    assert [p is None for p in out["pixel_values"]] == [False, False, True, False]
    assert out["bad_image"][2].startswith("could not decode the image of split 'train' row 2")
    examples = [{k: out[k][i] for k in out} for i in range(4)]
    collated = MixupCutmixCollator(2, mixup_prob=0.0, cutmix_prob=0.0, off_first_epochs=0)(examples)
    assert collated["pixel_values"].shape == (3, 3, 16, 16)
    assert [row for row, _ in collated["skipped_images"]] == [2]
    good = [out["pixel_values"][i] for i in (0, 1, 3)]
    assert all(torch.equal(a, b) for a, b in zip(collated["pixel_values"], good))
    with pytest.raises(BadImageError, match="every image of a training batch of 1 is bad, so --skip_bad_images has"):
        MixupCutmixCollator(2)([examples[2]])
    record = SkippedImages()
    record.add(collated["skipped_images"])
    assert [entry["row"] for entry in record.merged()] == [2]


def test_gif_none_and_empty_images_in_training():
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert("P") for _ in range(2)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_rgb({"bytes": buffer.getvalue(), "path": None}, "train", 0)
    assert torch.equal(decoded, torch.from_numpy(np.array(frames[0].convert("RGB"))).permute(2, 0, 1))
