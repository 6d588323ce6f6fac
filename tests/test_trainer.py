"""transformers' Trainer, a client we did not write, training SwinTiny loaded as remote code."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from swin_tiny_hf import SwinTinyForImageClassification, make_image_processor, save_model_and_processor
from swin_tiny_hf.training.synthetic_dataset import write_hub_layout

from conftest import tiny_config
from datasets_for_tests import WORDNET_IDS, tiny_imagenet_like

ROOT = Path(__file__).resolve().parent.parent
NUM_LABELS = len(WORDNET_IDS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny classifier saved as we ship models: weights, config with auto_map, model code, processor."""
    torch.manual_seed(0)
    # single-label: the Mixup case below trains on soft targets, which problem_type=None reads as multi-label
    config = tiny_config(num_labels=NUM_LABELS, drop_path_rate=0.0, problem_type="single_label_classification")
    model = SwinTinyForImageClassification(config)
    path = tmp_path_factory.mktemp("remote") / "model"
    save_model_and_processor(model, path)
    return path


def remote_model(folder):
    """The model as remote code: the class from the folder's own modeling file, as AutoModel...from_pretrained(
    folder, trust_remote_code=True) loads it where this package is not installed (tests/test_hub.py checks that;
    in this process the installed package is registered and would win)."""
    model_class = get_class_from_dynamic_module("modeling_swin_tiny.SwinTinyForImageClassification", str(folder))
    model = model_class.from_pretrained(folder)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    return model


@pytest.fixture(scope="module")
def splits():
    processor = make_image_processor(32)

    def transform(batch):
        batch["pixel_values"] = processor([image.convert("RGB") for image in batch["image"]], return_tensors="pt")[
            "pixel_values"
        ]
        return batch

    dataset = tiny_imagenet_like(train_per_class=8, valid_per_class=4)
    return dataset["train"].with_transform(transform), dataset["valid"].with_transform(transform)


def collate(examples):
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["label"] for e in examples]),
    }


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def arguments(output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        remove_unused_columns=False,
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


def test_trainer_trains_evaluates_keeps_a_bounded_number_of_checkpoints_and_saves(folder, splits, tmp_path):
    train_split, eval_split = splits
    args = arguments(
        tmp_path,
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=2,
        eval_strategy="steps",
        eval_steps=3,
    )
    trainer = Trainer(
        model=remote_model(folder),
        args=args,
        train_dataset=train_split,
        eval_dataset=eval_split,
        data_collator=collate,
        compute_metrics=accuracy,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    result = trainer.train()
    assert result.global_step == 6 and np.isfinite(result.training_loss)
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    # save_total_limit: only the newest two of checkpoint-2, -4, -6 remain
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    # evaluate with compute_metrics: the accuracy is the model's, computed here independently
    metrics = trainer.evaluate()
    model = trainer.model.eval()
    batch = collate([eval_split[i] for i in range(len(eval_split))])
    with torch.no_grad():
        output = model(**batch)
    expected_accuracy = float((output.logits.argmax(-1) == batch["labels"]).float().mean())
    assert metrics["eval_accuracy"] == pytest.approx(expected_accuracy)
    assert metrics["eval_loss"] == pytest.approx(float(output.loss), rel=1e-5)
    # save_model: a folder that loads (as remote code again) to the same logits
    trainer.save_model(tmp_path / "final")
    reloaded = remote_model(tmp_path / "final").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(batch["pixel_values"]).logits, output.logits)


def test_trainer_resumes_from_its_checkpoint_to_the_same_weights(folder, splits, tmp_path):
    train_split, _ = splits
    common = dict(max_steps=4, save_strategy="steps", save_steps=2)
    full = Trainer(
        model=remote_model(folder),
        args=arguments(tmp_path / "full", **common),
        train_dataset=train_split,
        data_collator=collate,
    )
    full.train()
    # a second run that has only the first checkpoint, as after a crash at step 3
    shutil.copytree(tmp_path / "full" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = Trainer(
        model=remote_model(folder),
        args=arguments(tmp_path / "resumed", **common),
        train_dataset=train_split,
        data_collator=collate,
    )
    resumed.train(resume_from_checkpoint=True)
    first = load_file(tmp_path / "full" / "checkpoint-4" / "model.safetensors")
    second = load_file(tmp_path / "resumed" / "checkpoint-4" / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


def mixed_targets(size: int, seed: int = 0) -> torch.Tensor:
    """Mixup-style soft targets, fixed per sample: lam * one_hot(a) + (1 - lam) * one_hot(b), smoothed."""
    generator = torch.Generator().manual_seed(seed)
    a, b = torch.randint(0, NUM_LABELS, (2, size), generator=generator)
    lam = torch.rand(size, 1, generator=generator)
    eye = torch.eye(NUM_LABELS)
    return (lam * eye[a] + (1 - lam) * eye[b]) * 0.95 + 0.05 / NUM_LABELS


@pytest.mark.parametrize("soft", [False, True], ids=["class_ids", "mixup_soft_targets"])
def test_gradient_accumulation_gives_the_weights_of_the_full_batch(folder, soft, tmp_path):
    """Trainer with batch 8 x 2 accumulation steps ends with the weights of batch 16 x 1.

    Plain SGD without clipping, so that a loss scaled wrongly (a mean per micro-batch, which Trainer then
    no longer divides by the accumulation steps) changes the weights; Adam would hide it.
    """
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(32, 3, 32, 32, generator=generator)
    labels = mixed_targets(32) if soft else torch.randint(0, NUM_LABELS, (32,), generator=generator)
    dataset = Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")
    weights = {}
    for batch, steps in ((16, 1), (8, 2)):
        args = arguments(
            tmp_path / f"{batch}x{steps}",
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=steps,
            max_steps=2,
            optim="sgd",
            learning_rate=0.5,
            max_grad_norm=0.0,
            save_strategy="no",
            lr_scheduler_type="constant",
        )
        trainer = Trainer(model=remote_model(folder), args=args, train_dataset=dataset)
        trainer.train()
        weights[(batch, steps)] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    initial = remote_model(folder).state_dict()
    moved = max(float((weights[(16, 1)][n] - initial[n]).abs().max()) for n in weights[(16, 1)])
    assert moved > 1e-3  # the two steps changed the weights visibly
    difference = max(float((weights[(16, 1)][n] - w).abs().max()) for n, w in weights[(8, 2)].items())
    assert difference < 1e-5, difference


def test_num_items_in_batch_sums_the_micro_batch_and_divides_by_the_step_count(config, pixel_values):
    model = SwinTinyForImageClassification(config).eval()
    hard = torch.tensor([4, 0, 2])
    soft = torch.softmax(torch.randn(3, 5), -1)
    with torch.no_grad():
        logits = model(pixel_values).logits
        per_sample = torch.nn.functional.cross_entropy(logits, hard, reduction="none")
        # the micro-batch is 3 of the 8 samples of the accumulated step: sum / 8
        loss = model(pixel_values, labels=hard, num_items_in_batch=torch.tensor(8)).loss
        torch.testing.assert_close(loss, per_sample.sum() / 8)
        # the whole step: the plain mean
        torch.testing.assert_close(
            model(pixel_values, labels=hard, num_items_in_batch=3).loss, model(pixel_values, labels=hard).loss
        )
        # soft targets: Trainer counts label entries (8 samples x 5 classes); the loss is per sample
        soft_per_sample = -(soft * torch.log_softmax(logits, -1)).sum(-1)
        loss = model(pixel_values, labels=soft, num_items_in_batch=torch.tensor(8 * 5)).loss
        torch.testing.assert_close(loss, soft_per_sample.sum() / 8)
    with pytest.raises(ValueError, match=r"unexpected arguments \['num_itmes_in_batch'\]"):
        model(pixel_values, labels=hard, num_itmes_in_batch=8)


def readme_trainer_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Train with 🤗 Trainer", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_trainer_snippet_runs(tmp_path, monkeypatch):
    """The README's Trainer section, as written, on a Tiny ImageNet-shaped dataset in the Hub's layout.

    Only the dataset name (the Hub's, which needs a network) and the length of the run change."""
    write_hub_layout(tiny_imagenet_like(train_per_class=4, valid_per_class=2), tmp_path / "tiny-imagenet")
    code = readme_trainer_snippet()
    for original, replacement in (
        ('"zh-plus/tiny-imagenet"', repr(str(tmp_path / "tiny-imagenet"))),
        ("num_train_epochs=10", "num_train_epochs=1"),
    ):
        assert original in code, original
        code = code.replace(original, replacement)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    folder = tmp_path / "swin-tiny-imagenet"
    assert (folder / "model.safetensors").exists() and (folder / "preprocessor_config.json").exists()
    loaded = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
    assert loaded.config.num_labels == NUM_LABELS
    assert "eval_accuracy" in namespace["metrics"]
