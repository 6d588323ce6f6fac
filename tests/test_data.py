import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from swin_tiny_hf import make_image_processor
from swin_tiny_hf.training.batch_augmentation import ReferenceTrainAugmentation
from swin_tiny_hf.training.data import digits_dataset, load_image_dataset
from swin_tiny_hf.training.transforms import EvalTransform, TrainTransform

from datasets_for_tests import WORDNET_IDS, tiny_imagenet_like

MEAN, STD = [0.4802, 0.4481, 0.3975], [0.2296, 0.2263, 0.2255]


def test_digits_are_real_64px_rgb_images_with_a_stratified_split():
    data = digits_dataset()
    train, validation = data["train"], data["validation"]
    assert len(train) + len(validation) == 1797 and len(validation) == 360
    assert train.features["label"].names == [str(d) for d in range(10)]
    image = train[0]["image"]
    assert image.size == (64, 64) and image.mode == "RGB"
    counts = np.bincount(validation["label"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class (174-183 images)
    again = digits_dataset()
    assert again["validation"]["label"] == validation["label"]


def test_tiny_imagenet_shaped_dataset_from_save_to_disk(tmp_path):
    tiny_imagenet_like().save_to_disk(tmp_path / "tin")
    data = load_image_dataset(str(tmp_path / "tin"))
    assert set(data) == {"train", "validation"}
    assert len(data["train"]) == 24 and len(data["validation"]) == 12  # "valid" is taken as validation
    assert data["train"].features["label"].names == WORDNET_IDS
    assert data["train"]["row"] == list(range(24))
    assert data["train"].column_names == ["image", "label", "row"]


def test_missing_validation_split_gets_a_stratified_seeded_split(tmp_path):
    DatasetDict(train=tiny_imagenet_like(train_per_class=10)["train"]).save_to_disk(tmp_path / "only_train")
    first = load_image_dataset(str(tmp_path / "only_train"), validation_fraction=0.2, seed=3)
    second = load_image_dataset(str(tmp_path / "only_train"), validation_fraction=0.2, seed=3)
    assert len(first["validation"]) == 8
    assert np.bincount(first["validation"]["label"]).tolist() == [2, 2, 2, 2]
    assert first["validation"]["label"] == second["validation"]["label"]


def test_image_folders(tmp_path):
    for split, count in (("train", 3), ("val", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 30), (i * 20, 0, 0)).save(folder / f"{i}.png")
    data = load_image_dataset(None, train_dir=str(tmp_path / "train"), validation_dir=str(tmp_path / "val"))
    assert len(data["train"]) == 6 and len(data["validation"]) == 4
    assert data["train"].features["label"].names == ["cat", "dog"]


def test_renamed_columns_and_clear_errors(tmp_path):
    features = Features({"img": ImageFeature(), "fine_label": ClassLabel(names=["a", "b"])})
    images = [Image.new("RGB", (8, 8))] * 4
    DatasetDict(train=Dataset.from_dict({"img": images, "fine_label": [0, 1, 0, 1]}, features=features)).save_to_disk(
        tmp_path / "renamed"
    )
    with pytest.raises(ValueError, match=r"split 'train' has no column 'image'.*--image_column_name"):
        load_image_dataset(str(tmp_path / "renamed"))
    data = load_image_dataset(
        str(tmp_path / "renamed"), image_column="img", label_column="fine_label", validation_fraction=0.5
    )
    assert data["train"].column_names == ["image", "label", "row"]


def test_label_outside_the_label_set_names_split_and_row(tmp_path):
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    images = [Image.new("RGB", (8, 8))] * 3
    DatasetDict(
        train=Dataset.from_dict({"image": images, "label": [0, 1, 0]}, features=features),
        validation=Dataset.from_dict({"image": images, "label": [0, -1, 1]}, features=features),
    ).save_to_disk(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"split 'validation' row 1: the label is missing \(-1\) \(1 such rows\)"):
        load_image_dataset(str(tmp_path / "bad"))


def _rows(dataset, indices):
    batch = dataset[indices]
    return {"image": batch["image"], "label": batch["label"], "row": batch["row"]}


def test_train_transform_is_seeded_per_batch_and_handles_grayscale():
    data = load_image_dataset("digits")
    grayscale = Dataset.from_dict(
        {"image": [Image.fromarray(np.full((64, 64), 128, np.uint8), mode="L")], "label": [0], "row": [0]},
        features=Features(
            {
                "image": ImageFeature(decode=False),
                "label": ClassLabel(names=["a"]),
                "row": data["train"].features["row"],
            }
        ),
    )
    transform = TrainTransform(ReferenceTrainAugmentation(64, MEAN, STD), seed=7)
    batch = _rows(data["train"], [0, 1, 2, 3])
    first = transform(batch)
    assert [p.shape for p in first["pixel_values"]] == [(3, 64, 64)] * 4
    assert first["pixel_values"][0].dtype == torch.float32 and first["labels"] == batch["label"]
    torch.manual_seed(0)
    again = transform(batch)
    for a, b in zip(first["pixel_values"], again["pixel_values"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    transform.set_epoch(1)
    other_epoch = transform(batch)
    assert not all(torch.equal(a, b) for a, b in zip(first["pixel_values"], other_epoch["pixel_values"]))
    # the global RNG is left untouched
    state = torch.get_rng_state()
    transform(batch)
    assert torch.equal(state, torch.get_rng_state())
    assert transform(_rows(grayscale, [0]))["pixel_values"][0].shape == (3, 64, 64)


def test_eval_transform_is_exactly_the_image_processor():
    data = load_image_dataset("digits")
    processor = make_image_processor(64)
    out = EvalTransform(processor)(_rows(data["validation"], [0, 5]))
    for pixels, image in zip(out["pixel_values"], digits_dataset()["validation"][[0, 5]]["image"]):
        expected = processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(pixels, expected, rtol=0, atol=0)


def test_undecodable_image_names_split_and_row():
    features = Features({"image": ImageFeature(decode=False), "label": ClassLabel(names=["a"])})
    broken = Dataset.from_dict(
        {"image": [{"bytes": b"definitely not a jpeg", "path": None}] * 3, "label": [0, 0, 0]}, features=features
    ).add_column("row", [0, 1, 2])
    transform = TrainTransform(ReferenceTrainAugmentation(64, MEAN, STD), seed=0)
    with pytest.raises(ValueError, match=r"could not decode the image of split 'train' row 2"):
        transform(_rows(broken, [2]))
    with pytest.raises(ValueError, match=r"could not decode the image of split 'validation' row 1"):
        EvalTransform(make_image_processor(64))(_rows(broken, [1]))
