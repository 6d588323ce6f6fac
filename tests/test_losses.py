"""The classifier's loss is transformers' own, for every problem type and label shape, plus this project's extras.

The reference is the loss function of transformers' `SwinForImageClassification` (`self.loss_function`, which its
forward calls: `ForSequenceClassificationLoss`), given the same logits, labels and problem type. Where that one
computes a value, ours is the same value and infers the same `problem_type`; where it raises (or broadcasts shapes
that do not match), ours raises a ValueError, except for the extras: soft targets (B, num_labels) under
"single_label_classification" (Mixup, CutMix), integer multi-label targets, and `num_items_in_batch` (Trainer's
gradient accumulation) for every problem type.
"""

import json
import logging
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from transformers import SwinConfig, SwinForImageClassification

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification
from swin_tiny_hf.modeling_swin_tiny import classification_loss

from conftest import tiny_config

PROBLEM_TYPES = [None, "regression", "single_label_classification", "multi_label_classification"]
LABEL_KINDS = ["ids", "ids_column", "values", "values_column", "soft_targets", "multi_hot", "multi_hot_integer"]
REFERENCE_LOSS = SwinForImageClassification(
    SwinConfig(image_size=8, patch_size=4, embed_dim=8, depths=[1], num_heads=[1], window_size=2)
).loss_function
MODELS = {}  # num_labels -> a tiny model in eval mode, built once
LOGITS = {}  # (num_labels, batch) -> its logits on the images of that batch size


def model_with(num_labels: int, problem_type: str | None) -> SwinTinyForImageClassification:
    if num_labels not in MODELS:
        torch.manual_seed(num_labels)
        MODELS[num_labels] = SwinTinyForImageClassification(tiny_config(num_labels=num_labels)).eval()
    model = MODELS[num_labels]
    model.config.problem_type = problem_type
    return model


def make_labels(kind: str, batch: int, num_labels: int, integer_dtype: torch.dtype, ignore_one: bool, seed: int):
    generator = torch.Generator().manual_seed(seed)
    if kind in ("ids", "ids_column"):
        labels = torch.randint(0, num_labels, (batch,), generator=generator).to(integer_dtype)
        if ignore_one and batch > 1:
            labels[0] = -100  # transformers' ignore index
        return labels if kind == "ids" else labels.view(batch, 1)
    if kind == "values":
        return torch.randn(batch, generator=generator)
    if kind == "values_column":
        return torch.randn(batch, 1, generator=generator)
    if kind == "soft_targets":  # what Mixup/CutMix and label smoothing make
        return torch.softmax(torch.randn(batch, num_labels, generator=generator) * 3, dim=-1)
    multi_hot = torch.randint(0, 2, (batch, num_labels), generator=generator)
    return multi_hot.float() if kind == "multi_hot" else multi_hot.to(integer_dtype)


def reference(logits, labels, problem_type, num_items_in_batch):
    """transformers' loss and the problem type it settles on; the loss is None where it raises."""
    config = SwinConfig(num_labels=logits.shape[1], problem_type=problem_type)
    options = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MSELoss warns where it broadcasts; see broadcasts()
            loss = REFERENCE_LOSS(labels.clone(), logits.clone(), config, **options)
    except (RuntimeError, ValueError, IndexError):
        loss = None
    return loss, config.problem_type


def broadcasts(logits, labels, problem_type) -> bool:
    """Where transformers' regression loss broadcasts labels of another shape against the logits (it warns)."""
    if problem_type != "regression":
        return False
    if logits.shape[1] == 1:
        return labels.squeeze().shape != logits.squeeze().shape
    try:
        return labels.shape != logits.shape and torch.broadcast_shapes(labels.shape, logits.shape) is not None
    except RuntimeError:
        return False


def expected_loss(logits, labels, problem_type, num_items_in_batch):
    """(the loss ours must give, or None where ours must raise a ValueError; the problem type it settles on):
    transformers' value, and this project's extras where transformers raises."""
    loss, settled = reference(logits, labels, problem_type, num_items_in_batch)
    if broadcasts(logits, labels, settled):
        return None, settled  # transformers averages over a broadcast grid; ours refuses
    if loss is not None:
        return loss, settled
    class_ids = not labels.is_floating_point() and labels.shape in ((len(labels),), (len(labels), 1))
    if settled == "single_label_classification" and class_ids:  # int32 ids: F.cross_entropy wants int64
        return reference(logits, labels.long(), settled, num_items_in_batch)[0], settled
    if settled == "single_label_classification" and labels.is_floating_point() and labels.shape == logits.shape:
        return -(labels * torch.log_softmax(logits, dim=-1)).sum(-1).mean(), settled  # soft targets
    if settled == "multi_label_classification" and labels.shape == logits.shape:  # integer targets, as floats
        return reference(logits, labels.float(), settled, num_items_in_batch)[0], settled
    return None, settled


@settings(max_examples=60, deadline=None)
@given(
    num_labels=st.integers(1, 4),
    batch=st.integers(1, 4),
    problem_type=st.sampled_from(PROBLEM_TYPES),
    kind=st.sampled_from(LABEL_KINDS),
    integer_dtype=st.sampled_from([torch.int64, torch.int32]),
    ignore_one=st.booleans(),
    count_items=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_loss_and_problem_type_are_transformers(
    num_labels, batch, problem_type, kind, integer_dtype, ignore_one, count_items, seed
):
    # transformers' config refuses this pair when it is built, and so does ours
    assume(not (problem_type == "single_label_classification" and num_labels == 1))
    model = model_with(num_labels, problem_type)
    ignore_one &= problem_type in (None, "single_label_classification") and num_labels > 1  # -100: class ids only
    labels = make_labels(kind, batch, num_labels, integer_dtype, ignore_one, seed)
    pixel_values = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    # Trainer's count of the items of this (whole) batch: then the loss is the batch mean, transformers' value
    num_items_in_batch = labels.ne(-100).sum() if count_items else None
    with torch.no_grad():
        if (num_labels, batch) not in LOGITS:
            LOGITS[num_labels, batch] = model(pixel_values).logits
        logits = LOGITS[num_labels, batch]
        expected, settled = expected_loss(logits, labels, problem_type, num_items_in_batch)
        if expected is None:
            with pytest.raises(ValueError, match="labels must"):
                model(pixel_values, labels=labels, num_items_in_batch=num_items_in_batch)
        else:
            output = model(pixel_values, labels=labels, num_items_in_batch=num_items_in_batch)
            torch.testing.assert_close(output.logits, logits, rtol=0, atol=0)
            torch.testing.assert_close(output.loss, expected.float(), rtol=1e-5, atol=1e-6)
    assert model.config.problem_type == settled


def test_one_label_and_float_labels_is_regression_and_trains(pixel_values):
    """The issue: num_labels=1 with float labels raised "soft-target labels must have shape (batch, num_labels)"."""
    model = SwinTinyForImageClassification(tiny_config(num_labels=1)).eval()
    values = torch.tensor([0.5, -1.0, 2.0])
    output = model(pixel_values, labels=values)
    assert model.config.problem_type == "regression"
    torch.testing.assert_close(output.loss, F.mse_loss(output.logits.squeeze(-1), values))
    output.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_one_label_and_integer_labels_is_regression_not_a_one_class_cross_entropy(pixel_values):
    """A cross-entropy over one class is 0 with gradient 0: the model trained nothing."""
    model = SwinTinyForImageClassification(tiny_config(num_labels=1)).eval()
    output = model(pixel_values, labels=torch.tensor([0, 1, 1]))
    torch.testing.assert_close(output.loss, F.mse_loss(output.logits.squeeze(-1), torch.tensor([0.0, 1.0, 1.0])))
    assert output.loss > 0
    output.loss.backward()
    assert model.classifier.weight.grad.abs().sum() > 0


def test_regression_labels_of_shape_batch_by_1_are_not_broadcast_to_batch_by_batch(pixel_values):
    model = SwinTinyForImageClassification(tiny_config(num_labels=1, problem_type="regression")).eval()
    column = torch.tensor([[0.5], [-1.0], [2.0]])
    with torch.no_grad():
        predictions = model(pixel_values).logits  # (3, 1)
        expected = ((predictions - column) ** 2).mean()  # over the 3 samples
        broadcast = ((predictions.squeeze(-1) - column) ** 2).mean()  # over a (3, 3) grid: the old loss
        assert not torch.allclose(expected, broadcast)
        torch.testing.assert_close(model(pixel_values, labels=column).loss, expected)


def test_ignored_class_ids_add_nothing_and_are_not_counted(pixel_values):
    model = SwinTinyForImageClassification(tiny_config()).eval()
    with torch.no_grad():
        logits = model(pixel_values).logits
        labels = torch.tensor([3, -100, 1])
        kept = F.cross_entropy(logits[[0, 2]], labels[[0, 2]], reduction="none")
        torch.testing.assert_close(model(pixel_values, labels=labels).loss, kept.mean())
        # Trainer counts the labels that are not -100 over the accumulated step (here 2 of 5)
        torch.testing.assert_close(model(pixel_values, labels=labels, num_items_in_batch=5).loss, kept.sum() / 5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\) or be -100 \(ignored\), got \[-3, 7\]"):
        model(pixel_values, labels=torch.tensor([7, -3, 1]))


@pytest.mark.parametrize(
    "problem_type, labels",
    [
        ("regression", torch.tensor([[0.5, 1.0], [0.0, 2.0], [1.0, 1.0]])),  # num_labels 2: (B, K) values
        ("multi_label_classification", torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])),
    ],
)
def test_num_items_in_batch_divides_the_summed_loss_for_every_problem_type(pixel_values, problem_type, labels):
    """Under gradient accumulation Trainer passes the label entries of the whole step and no longer divides the
    loss itself; transformers' own loss ignores it for these two problem types (a mean per micro-batch)."""
    model = SwinTinyForImageClassification(tiny_config(num_labels=2, problem_type=problem_type)).eval()
    with torch.no_grad():
        logits = model(pixel_values).logits
        elementwise = (
            F.mse_loss(logits, labels, reduction="none")
            if problem_type == "regression"
            else F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        )
        # this micro-batch holds 6 of the step's 10 label entries
        loss = model(pixel_values, labels=labels, num_items_in_batch=torch.tensor(10)).loss
        torch.testing.assert_close(loss, elementwise.sum() / 10)


def test_inferred_problem_type_is_saved_in_the_config_as_transformers_does(pixel_values, tmp_path):
    model = SwinTinyForImageClassification(tiny_config())
    assert model.config.problem_type is None
    model(pixel_values, labels=torch.tensor([0, 1, 2]))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["problem_type"] == "single_label_classification"
    assert SwinTinyConfig.from_pretrained(tmp_path).problem_type == "single_label_classification"
    # transformers' own model does the same to its config on the same labels
    config = SwinConfig(num_labels=5)
    REFERENCE_LOSS(torch.tensor([0, 1, 2]), torch.randn(3, 5), config)
    assert config.problem_type == model.config.problem_type


def test_soft_targets_need_single_label_classification_and_otherwise_warn(pixel_values, caplog):
    """transformers reads float (B, K) labels as multi-label targets where problem_type is None; so do we, and
    say so when they look like Mixup's soft targets. With "single_label_classification" they are soft targets."""
    targets = torch.softmax(torch.randn(3, 5, generator=torch.Generator().manual_seed(0)), dim=-1)
    soft = SwinTinyForImageClassification(tiny_config(problem_type="single_label_classification")).eval()
    with torch.no_grad():
        logits = soft(pixel_values).logits
        expected = -(targets * torch.log_softmax(logits, -1)).sum(-1).mean()
        torch.testing.assert_close(soft(pixel_values, labels=targets).loss, expected)
        inferred = SwinTinyForImageClassification(tiny_config()).eval()
        inferred.load_state_dict(soft.state_dict())
        with caplog.at_level(logging.WARNING):
            loss = inferred(pixel_values, labels=targets).loss
    assert inferred.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, targets))
    assert "problem_type='single_label_classification'" in caplog.text


def test_an_unknown_problem_type_names_the_choices():
    """The config refuses one on assignment; the loss refuses one from a config that did not."""
    with pytest.raises(ValueError, match=r"problem_type must be one of \('regression', .*got 'regresion'"):
        classification_loss(torch.randn(3, 5), torch.tensor([0, 1, 2]), "regresion")


def test_the_training_recipe_trains_on_soft_targets_with_a_soft_target_cross_entropy():
    """train.py's collator always gives float (B, K) targets (Mixup, CutMix, label smoothing): its model config
    names the problem type, or the model would read them as multi-label targets."""
    from swin_tiny_hf.training.flags import model_overrides, parse_args
    from swin_tiny_hf.training.starting_model import model_config

    args = parse_args(["--output_dir", "x"])
    config = model_config(None, model_overrides(args), ["cat", "dog", "fish"])
    assert config.problem_type == "single_label_classification"
