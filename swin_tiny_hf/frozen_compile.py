"""A model compiled for inference with its weights frozen into the graph: PyTorch's fastest way to serve it on a CPU.

    from swin_tiny_hf.frozen_compile import compile_frozen

    serve = compile_frozen(model)           # model in eval mode; the weights it has now are the ones served
    logits = serve(pixel_values).logits     # the first call compiles (half a minute here); see "Batch sizes"

inductor's freezing (`torch._inductor.config.freezing`, what PyTorch's CPU inference guides set with
`TORCHINDUCTOR_FREEZING=1`) treats parameters and buffers as constants: it may fold what depends on them alone (the
attention masks), packs the linears' weights once in oneDNN's layout (in bf16 once, where eager autocast casts every
weight on every call) and fuses the elementwise work around the products into their kernels. Measured on 2 cores
of an AMD EPYC (Zen 5), 64 px, weights in bf16 (`benchmarks/latency.py --compiled`, BENCHMARKS.md): 1.5x our eager
model at one image, 1.2x at 8 and 1.1x at 64; in fp32 it gains at one image only. timm's Swin compiled the same way
runs within 10% of ours.

What `compile_frozen` adds to `torch.compile`, each a way to get it silently wrong or silently slow:
- Dynamo reads the freezing flag when it traces, which is the first call of each new input shape, not the call to
  `torch.compile`; `torch.compile(model, options={"freezing": True})` is read too late and measured no faster than
  without it. The wrapper turns the flag on while its calls run (so every recompilation, a new batch size, is frozen
  too), for the calling thread where PyTorch keeps the config per thread, not for the whole process.
- Freezing applies to graphs without gradients: each call runs under `torch.no_grad()`, the model in eval mode.
- A frozen graph keeps the weights it was traced with, and only in part (others are read live), so a changed weight
  gives logits that are neither the old model's nor the new one's. The wrapper records each parameter's and buffer's
  storage and version counter at its first call and refuses any call after one changed: written in place (an
  optimizer step, fused ones included: PyTorch's fused AdamW does not count its writes, so once a wrapper exists
  every `torch.optim` step counts them for it; `load_state_dict`, `mul_` under no_grad), replaced, or a submodule
  replaced. Writes through `.data` bypass version counters and are not seen: change the weights before compiling.
- Dynamo keeps compiled graphs on the model's code, and reuses one whose guards pass without looking at the weights
  or at the freezing flag: a second `torch.compile` of the same module would answer from the first frozen graph with
  the old weights, and a module compiled before without freezing would serve that graph unfrozen. So
  `compile_frozen` starts from `torch.compiler.reset()`: it drops every compiled graph of the process, which then
  compile again on their next call. Create the wrappers you need before the first request. In the other direction,
  a plain `torch.compile` of a model served frozen answers from the frozen graph under no_grad: reset first.

Batch sizes: the first request of a batch size compiles, and so may the first of another (dynamo specialises batch
size 1; it compiles a graph with a dynamic batch for the second size it sees, with guards that some sizes fall
outside: in fp32 under 16 and from 16 on). Send one request of each batch size you will serve at start-up, or pass
`dynamic=False` for one static graph per size (what `benchmarks/latency.py` does).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

STALE_WEIGHTS = (
    "the weights of the model changed after it was compiled with frozen weights ({names}); its compiled graph still "
    "holds the old ones. Call compile_frozen(model) again (it drops every compiled graph of this process and "
    "compiles from the weights as they are then)."
)


_freezing_lock = threading.Lock()
_freezing_calls = 0  # FrozenInference calls in flight, in every thread (where the config is the process's)
_freezing_before = False  # the flag as it was before the first of them


@functools.cache
def config_is_per_thread() -> bool:
    """Whether a write to inductor's config is seen by this thread only (PyTorch keeps user settings in a ContextVar
    in recent releases; older ones kept one setting for the process). Asked of PyTorch by trying: another thread sets
    the flag and this one reads it."""
    from torch._inductor import config as inductor_config

    before, written, seen = inductor_config.freezing, threading.Event(), threading.Event()

    def write() -> None:
        with inductor_config.patch(freezing=not before):
            written.set()
            seen.wait()

    writer = threading.Thread(target=write)
    writer.start()
    written.wait()
    per_thread = inductor_config.freezing == before
    seen.set()
    writer.join()
    return per_thread


@contextlib.contextmanager
def freezing_on() -> Iterator[None]:
    """inductor's freezing flag on for this call, as it was afterwards. Where the config is per thread, a patch for
    this thread. Where it is the process's, on while any such call is in flight in any thread: a patch per call would
    let the first call to return turn the flag off under another thread's call that is still tracing, and the last
    leave it on for the whole process."""
    global _freezing_calls, _freezing_before
    from torch._inductor import config as inductor_config  # imported here: inductor is heavy to import

    if config_is_per_thread():
        with inductor_config.patch(freezing=True):
            yield
        return
    with _freezing_lock:
        if _freezing_calls == 0:
            _freezing_before = inductor_config.freezing
            inductor_config.freezing = True
        _freezing_calls += 1
    try:
        yield
    finally:
        with _freezing_lock:
            _freezing_calls -= 1
            if _freezing_calls == 0:
                inductor_config.freezing = _freezing_before


def weights_fingerprint(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{name: (storage address, version counter)} of every parameter and buffer: it changes when a weight is written
    in place (optimizer steps, `load_state_dict`, `mul_` under no_grad) or replaced. For the error message; each call
    compares `weights_state` (the same, without names, at a third of the cost)."""
    named = itertools.chain(
        model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)
    )
    return {name: (tensor.data_ptr(), tensor._version) for name, tensor in named}


def weights_state(modules: list[nn.Module]) -> tuple:
    """Identity, storage address and version of every parameter and buffer of `modules` (a model's `modules()`, listed
    once), and the identity of every child, so that a submodule replaced since is seen too."""
    tensors = (t for m in modules for group in (m._parameters, m._buffers) for t in group.values() if t is not None)
    weights = tuple((id(t), t.data_ptr(), t._version) for t in tensors)
    return weights + tuple(id(child) for m in modules for child in m._modules.values())


_step_hook = None


def count_optimizer_writes() -> None:
    """From now on, every `torch.optim` step bumps the version counter of the parameters it updated (those with a
    gradient; also when a grad scaler had the step skipped: then a wrapper refuses though nothing changed), as
    PyTorch's in-place ops do: its fused kernels (AdamW with `fused=True`, transformers Trainer's default and
    train.py's optimizer) write the parameters without counting it, and a frozen graph would go on serving the old
    weights. Registered once, at the first `compile_frozen` (a global hook: a few microseconds a step)."""
    global _step_hook
    if _step_hook is not None:
        return

    def bump_versions(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                # what a step updates: parameters with a gradient (frozen ones, as a LoRA's base, are left alone, and a
                # graph that saved them may still run its backward); an inference tensor has no version counter
                if parameter.grad is not None and not parameter.is_inference():
                    torch.autograd.graph.increment_version(parameter)

    _step_hook = register_optimizer_step_post_hook(bump_versions)


class FrozenInference:
    """Calls `torch.compile(model, **compile_kwargs)` with inductor's freezing on and gradients off, and refuses a
    call once the model's weights changed after they were frozen (see the module docstring). Returns what the
    model returns."""

    def __init__(self, model: nn.Module, **compile_kwargs: Any):
        if not isinstance(model, nn.Module):
            raise ValueError(f"compile_frozen takes a torch.nn.Module, got {type(model).__name__}.")
        count_optimizer_writes()
        torch.compiler.reset()  # no graph of this model's code from before: see the module docstring
        self.model = model.eval()
        self.compiled = torch.compile(model, **compile_kwargs)
        self.modules: list[nn.Module] = []  # listed at the first call, when it traces: a head swapped before is in
        self.frozen_state: tuple | None = None  # recorded at the first call
        self.frozen_weights: dict[str, tuple[int, int]] = {}  # the same, named: for the error message

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.frozen_state is None:  # the first call: it traces the model as it is now
            self.modules = list(self.model.modules())
            self.frozen_weights = weights_fingerprint(self.model)
            self.frozen_state = weights_state(self.modules)
        elif weights_state(self.modules) != self.frozen_state:
            weights = weights_fingerprint(self.model)
            changed = [
                name
                for name in weights.keys() | self.frozen_weights.keys()
                if weights.get(name) != self.frozen_weights.get(name)
            ] or ["a parameter, buffer or submodule replaced"]
            shown = ", ".join(sorted(changed)[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise RuntimeError(STALE_WEIGHTS.format(names=shown))
        if self.model.training:
            raise RuntimeError(
                "the model was put back in training mode after compile_frozen: frozen graphs are for inference. "
                "Call model.eval(), or train the model itself rather than this wrapper."
            )
        with torch.no_grad(), freezing_on():
            return self.compiled(*args, **kwargs)


def compile_frozen(model: nn.Module, **compile_kwargs: Any) -> FrozenInference:
    """`model` (put in eval mode) compiled for inference with its current weights frozen into the graph.

    Args:
        model: any `nn.Module`, ours in fp32 or loaded with `dtype=torch.bfloat16` (on a CPU with native bf16, the
            fastest), or another library's.
        compile_kwargs: passed to `torch.compile` (`backend`, `mode`, `dynamic`, ...).
    Returns:
        a callable taking the model's arguments. Its first call compiles (see "Batch sizes" in the module docstring);
        after the weights change it raises instead of answering with the old ones. Creating it drops every graph
        compiled in this process before (`torch.compiler.reset()`).
    """
    return FrozenInference(model, **compile_kwargs)
