"""compile_frozen: inductor's freezing on while each graph is traced (and only then), gradients off, and no answer
from weights that changed after they were frozen. A recording backend stands in for inductor here, so the tests
stay fast; the README's serving example compiles the full model with inductor itself, in bf16, and test_readme.py
compares its logits with the eager model's."""

import threading

import pytest
import torch
from torch import nn

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification, frozen_compile
from swin_tiny_hf.frozen_compile import compile_frozen

TINY = dict(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4, num_labels=5)


class RecordingBackend:
    """A torch.compile backend that runs the traced graph as it is and records, for each graph it is given, whether
    inductor's freezing was on and gradients were off while it was traced."""

    def __init__(self):
        self.traced = []

    def __call__(self, graph_module, example_inputs):
        from torch._inductor import config as inductor_config

        self.traced.append({"freezing": inductor_config.freezing, "grad": torch.is_grad_enabled()})
        return graph_module.forward


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """No compiled graph left behind for later tests: dynamo keeps them on the model's code, shared by every SwinTiny
    model of the process (compile_frozen itself starts from a reset)."""
    yield
    torch.compiler.reset()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SwinTinyForImageClassification(SwinTinyConfig(**TINY)).train()


def test_each_graph_is_traced_frozen_without_gradients_and_answers_as_eager(model):
    from torch._inductor import config as inductor_config

    backend = RecordingBackend()
    serve = compile_frozen(model, backend=backend)
    assert not model.training  # compile_frozen put it in eval mode
    for batch in (2, 3):  # a new batch size traces again: frozen too
        pixel_values = torch.randn(batch, 3, 32, 32)
        logits = serve(pixel_values).logits
        with torch.no_grad():
            torch.testing.assert_close(logits, model(pixel_values).logits)
        assert not logits.requires_grad
    assert len(backend.traced) >= 2
    assert all(traced == {"freezing": True, "grad": False} for traced in backend.traced)
    assert inductor_config.freezing is False  # only around its calls, never for the whole process


@pytest.mark.parametrize(
    "change",
    [
        "in_place",  # a weight edited under no_grad
        "fused_adamw",  # transformers Trainer's default optimizer, and train.py's: its kernel counts no write itself
        "foreach_sgd",
        "load_state_dict",
        "replaced",  # a new Parameter assigned
        "buffer",
        "submodule",  # a new module in its place
    ],
)
def test_a_call_after_the_weights_changed_is_refused_and_names_them(model, change):
    serve = compile_frozen(model, backend=RecordingBackend())
    pixel_values = torch.randn(2, 3, 32, 32)
    before = serve(pixel_values).logits
    serve(pixel_values)  # unchanged weights: answered again
    qkv = model.swin.stages[0].blocks[0].attention.qkv
    with torch.no_grad():
        if change == "in_place":
            qkv.weight.mul_(0.5)
        elif change in ("fused_adamw", "foreach_sgd"):
            with torch.enable_grad():
                model.train()
                model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 1])).loss.backward()
                model.eval()
            parameters = [qkv.weight]  # the optimizer updates these only
            if change == "fused_adamw":
                optimizer = torch.optim.AdamW(parameters, lr=0.1, fused=True)
            else:
                optimizer = torch.optim.SGD(parameters, lr=0.1, foreach=True)
            optimizer.step()
        elif change == "load_state_dict":
            model.load_state_dict({k: v * 2 for k, v in model.state_dict().items()})
        elif change == "replaced":
            qkv.weight = nn.Parameter(qkv.weight * 0.5)
        elif change == "buffer":
            model.swin.stages[0].blocks[0].attention.relative_position_index.fill_(0)
        else:
            model.classifier = nn.Linear(model.classifier.in_features, 5)
    with pytest.raises(RuntimeError, match=r"changed after it was compiled.*compile_frozen\(model\) again") as error:
        serve(pixel_values)
    qkv_weight = "(swin.stages.0.blocks.0.attention.qkv.weight)"
    named = {
        "in_place": qkv_weight,
        "fused_adamw": qkv_weight,
        "foreach_sgd": qkv_weight,
        "submodule": "(classifier.bias, classifier.weight)",
        "replaced": qkv_weight,
        "buffer": "(swin.stages.0.blocks.0.attention.relative_position_index)",
        "load_state_dict": "(classifier.bias, classifier.weight, swin.embeddings.norm.bias and "
        f"{len(model.state_dict()) - 3} more)",
    }
    assert named[change] in str(error.value)
    assert before.shape == (2, 5)


def test_training_mode_and_non_modules_are_refused(model):
    with pytest.raises(ValueError, match="takes a torch.nn.Module, got function"):
        compile_frozen(lambda x: x)
    serve = compile_frozen(model, backend=RecordingBackend())
    model.train()
    with pytest.raises(RuntimeError, match="back in training mode"):
        serve(torch.randn(2, 3, 32, 32))


def test_overlapping_calls_from_two_threads_each_trace_frozen_and_leave_the_flag_as_it_was(model):
    """A threaded server: the second thread's call starts while the first's runs, and the first returns first. Both
    must trace with freezing on (inductor's config is per thread in recent PyTorch: a flag set by the first thread
    alone would leave the second unfrozen), and neither thread keeps the flag afterwards."""
    from torch._inductor import config as inductor_config

    first_inside, second_inside, first_returned = threading.Event(), threading.Event(), threading.Event()
    traced, after = {}, {}

    def backend_for(name):
        def backend(graph_module, example_inputs):
            traced.setdefault(name, []).append(inductor_config.freezing)
            return graph_module.forward

        return backend

    other = SwinTinyForImageClassification(SwinTinyConfig(**TINY))
    serves = {"first": compile_frozen(model, backend=backend_for("first"))}
    serves["second"] = compile_frozen(other, backend=backend_for("second"))  # before any call: no graph to reset

    def serve(name, wait_for, then_set):
        def hook(module, args):  # inside the call (after freezing_on), before the trace: let the threads interleave
            then_set.set()
            wait_for.wait(timeout=30)

        handle = serves[name].model.swin.embeddings.register_forward_pre_hook(hook)
        serves[name](torch.randn(2, 3, 32, 32))
        handle.remove()
        if name == "first":
            first_returned.set()
        else:
            first_returned.wait(timeout=30)
        after[name] = inductor_config.freezing

    threads = [
        threading.Thread(target=serve, args=("first", second_inside, first_inside)),
        threading.Thread(target=serve, args=("second", first_inside, second_inside)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert traced and all(traced.get(name) and all(traced[name]) for name in ("first", "second")), traced
    assert after == {"first": False, "second": False}
    assert inductor_config.freezing is False


def test_where_the_config_is_the_processs_the_flag_stays_on_until_the_last_overlapping_call_returns(monkeypatch):
    """An older PyTorch keeps one inductor config for the process: calls from two threads overlap, and the first to
    return must not turn the flag off under the other; once both returned, the flag is as it was."""
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(frozen_compile, "config_is_per_thread", lambda: False)
    first, second = frozen_compile.freezing_on(), frozen_compile.freezing_on()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first call returns while the second still runs
    assert inductor_config.freezing is True
    second.__exit__(None, None, None)
    assert inductor_config.freezing is False
    with inductor_config.patch(freezing=True):  # a process that set it itself keeps it
        with frozen_compile.freezing_on():
            pass
        assert inductor_config.freezing is True


def test_the_optimizer_hook_leaves_parameters_without_a_gradient_alone():
    """A LoRA-style step: the optimizer holds a frozen base layer too, and a graph built before the step that saved
    the base weight is differentiated after it. The step updated the adapter only, so only its version may move."""
    compile_frozen(nn.Linear(2, 2), backend=RecordingBackend())  # registers the hook, as any first use does
    base, adapter = nn.Linear(4, 4).requires_grad_(False), nn.Linear(4, 4)
    optimizer = torch.optim.AdamW([*adapter.parameters(), *base.parameters()], lr=0.1, fused=True)
    x = torch.randn(2, 4)
    first, second = base(adapter(x)).sum(), base(adapter(x)).pow(2).sum()
    first.backward()
    base_version, adapter_version = base.weight._version, adapter.weight._version
    optimizer.step()
    assert base.weight._version == base_version and adapter.weight._version > adapter_version
    second.backward()  # base.weight, saved before the step, is unchanged: no in-place error


def test_a_head_swapped_between_compiling_and_the_first_call_is_watched(model):
    serve = compile_frozen(model, backend=RecordingBackend())
    model.classifier = nn.Linear(model.classifier.in_features, 5)  # before the first call: this head is traced
    serve(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    with pytest.raises(RuntimeError, match=r"\(classifier\.weight\)"):
        serve(torch.randn(2, 3, 32, 32))


def test_compiling_again_after_a_change_traces_the_new_weights(model):
    """A second `torch.compile` of the same module would reuse the first graph (dynamo keeps it on the model's code,
    whatever the weights); compile_frozen starts from a reset, so it traces again and answers with the new weights."""
    backend = RecordingBackend()
    pixel_values = torch.randn(2, 3, 32, 32)
    compile_frozen(model, backend=backend)(pixel_values)
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    traced = len(backend.traced)
    logits = compile_frozen(model, backend=backend)(pixel_values).logits
    assert len(backend.traced) > traced  # traced again, not answered from the first graph
    with torch.no_grad():
        torch.testing.assert_close(logits, model(pixel_values).logits)
