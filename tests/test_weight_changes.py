"""However the weights change, the model's outputs are a fresh model's with the same weights.

A model that caches anything derived from its weights (it once cached each block's attention mask, keyed on
the bias table's address and version counter) goes stale when they change without bumping that counter:
writes through `.data` (EMA swaps, some loaders), fused optimizers. Each test runs the model once (so that
a cache, if any, would be filled), changes the weights one way, and compares the logits with those of a model
freshly loaded with the new weights, exactly.
"""

import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swin_tiny_hf import SwinTinyForImageClassification

from conftest import perturbed, tiny_config

LABELS = torch.tensor([0, 1, 2])


def other_weights(model):
    """A second set of weights, as different from `model`'s as a trained copy would be."""
    torch.manual_seed(1)
    parameter = next(model.parameters())
    return perturbed(SwinTinyForImageClassification(model.config), scale=0.2).to(parameter.device, parameter.dtype)


def bias_tables(model):
    return [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]


def optimizer_step(model, optimizer_class, train_mode, **options):
    """One step of `optimizer_class` on a classification loss, in train mode or (fine-tuning a frozen-dropout
    model) in eval mode."""
    optimizer = optimizer_class(model.parameters(), lr=0.1, **options)
    model.train(train_mode)
    pixel_values = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model(pixel_values.to(next(model.parameters()).dtype), labels=LABELS).loss.backward()
    optimizer.step()
    return model.eval()


def bias_tables_times_100_through_data(model):
    for table in bias_tables(model):
        table.data.mul_(100)  # does not bump table._version
    return model


def every_weight_rescaled_through_data(model):
    for parameter in model.parameters():
        parameter.data.mul_(1.5).add_(0.01)
    return model


def data_assigned(model):
    for parameter, other in zip(model.parameters(), other_weights(model).parameters()):
        parameter.data = other.data.clone()  # a new tensor behind the same Parameter
    return model


def ema_swap_through_data(model):
    """An EMA of the weights (updated through `.data`, as many EMA helpers do), swapped in for evaluation."""
    ema = [p.detach().clone() for p in other_weights(model).parameters()]
    for average, parameter in zip(ema, model.parameters()):
        average.lerp_(parameter.data, 0.1)  # average = 0.9 * average + 0.1 * parameter
    for average, parameter in zip(ema, model.parameters()):
        parameter.data.copy_(average)
    return model


def foreach_through_data(model):
    torch._foreach_mul_([p.data for p in model.parameters()], 0.5)
    return model


def in_place_under_no_grad(model):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5).add_(0.01)
    return model


def copied_under_no_grad(model):
    with torch.no_grad():
        for parameter, other in zip(model.parameters(), other_weights(model).parameters()):
            parameter.copy_(other)
    return model


def state_dict_loaded(model, assign=False):
    model.load_state_dict(other_weights(model).state_dict(), assign=assign)
    return model


def half_then_float(model):
    """fp16 and back: every weight rounded to fp16's precision, new tensors twice."""
    return model.half().float()


def changed_then_cast(cast):
    def change(model):
        return cast(every_weight_rescaled_through_data(model))

    return change


WEIGHT_CHANGES = {
    "adamw_step_in_train_mode": lambda m: optimizer_step(m, torch.optim.AdamW, True),
    "fused_adamw_step_in_train_mode": lambda m: optimizer_step(m, torch.optim.AdamW, True, fused=True),
    "fused_adamw_step_in_eval_mode": lambda m: optimizer_step(m, torch.optim.AdamW, False, fused=True),
    "sgd_step_in_eval_mode": lambda m: optimizer_step(m, torch.optim.SGD, False),
    "bias_tables_times_100_through_data": bias_tables_times_100_through_data,
    "every_weight_through_data": every_weight_rescaled_through_data,
    "data_assigned": data_assigned,
    "ema_swap_through_data": ema_swap_through_data,
    "foreach_through_data": foreach_through_data,
    "in_place_under_no_grad": in_place_under_no_grad,
    "copy_under_no_grad": copied_under_no_grad,
    "load_state_dict": state_dict_loaded,
    "load_state_dict_assign": lambda m: state_dict_loaded(m, assign=True),
    "half_then_float": half_then_float,
    "to_float64": changed_then_cast(lambda m: m.to(torch.float64)),
    "to_bfloat16": changed_then_cast(lambda m: m.to(torch.bfloat16)),
    "half": changed_then_cast(lambda m: m.half()),
}
if torch.cuda.is_available():
    WEIGHT_CHANGES["to_cuda"] = changed_then_cast(lambda m: m.cuda())
    WEIGHT_CHANGES["cuda_and_back"] = lambda m: every_weight_rescaled_through_data(m.cuda()).cpu()


def logits(model, pixel_values, mode=torch.no_grad):
    """The logits of `model` as it is: no `eval()` here, which would have dropped the old cache."""
    assert not model.training
    parameter = next(model.parameters())
    with mode():
        return model(pixel_values.to(parameter.device, parameter.dtype)).logits


def freshly_loaded(model):
    """A new model with `model`'s weights, dtype and device."""
    parameter = next(model.parameters())
    fresh = SwinTinyForImageClassification(model.config).to(parameter.device, parameter.dtype)
    fresh.load_state_dict(model.state_dict())
    return fresh.eval()


@pytest.mark.parametrize("change", WEIGHT_CHANGES.values(), ids=WEIGHT_CHANGES.keys())
def test_outputs_after_a_weight_change_are_a_freshly_loaded_models(change, pixel_values):
    model = perturbed(SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0)))
    before = logits(model, pixel_values)
    model = change(model)
    after = logits(model, pixel_values)
    assert not torch.equal(after.float().cpu(), before), "the change did not change the outputs: it proves nothing"
    assert torch.equal(after, logits(freshly_loaded(model), pixel_values))


def test_bias_table_change_through_data_changes_the_logits_by_what_a_fresh_model_says(pixel_values):
    """The issue's figure: multiplying the bias tables by 100 through `.data` used to leave the logits unchanged."""
    model = perturbed(SwinTinyForImageClassification(tiny_config()))
    before = logits(model, pixel_values)
    bias_tables_times_100_through_data(model)
    expected = logits(freshly_loaded(model), pixel_values)
    assert (expected - before).abs().max() > 1e-3
    torch.testing.assert_close(logits(model, pixel_values), expected, rtol=0, atol=0)


def test_bias_tables_get_gradients_after_an_inference_mode_forward(pixel_values):
    """Inference tensors from an earlier forward never leak into a training graph."""
    model = perturbed(SwinTinyForImageClassification(tiny_config()))
    logits(model, pixel_values, torch.inference_mode)
    model.train()(pixel_values, labels=LABELS).loss.backward()
    assert all(table.grad.abs().sum() > 0 for table in bias_tables(model))


CPU_CHANGES = [name for name in WEIGHT_CHANGES if "cuda" not in name and name not in ("to_bfloat16", "half")]


@settings(max_examples=8, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(CPU_CHANGES), st.sampled_from(["no_grad", "inference_mode", "grad"])),
        min_size=1,
        max_size=4,
    )
)
def test_any_sequence_of_weight_changes_gives_the_saved_and_reloaded_models_outputs(steps):
    """Changes in any order, with forwards of every kind between them; the reference is save_pretrained +
    from_pretrained, as a user reloads a model."""
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    modes = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode, "grad": torch.enable_grad}
    model = perturbed(SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0)))
    for name, mode in steps:
        logits(model, pixel_values, modes[mode])
        model = WEIGHT_CHANGES[name](model)
    model = model.float()  # float64 after "to_float64": saved and compared in fp32
    after = logits(model, pixel_values)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        reloaded = SwinTinyForImageClassification.from_pretrained(folder).eval()
    assert torch.equal(after, logits(reloaded, pixel_values))
