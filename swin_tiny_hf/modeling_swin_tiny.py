"""Swin Transformer for small images, as transformers models.

Layout of the feature map is channels-last, (B, H, W, C), from the patch embedding to the final
norm. Window partition is not a separate copy: the qkv projection runs on the whole map and one
permute both splits heads and gathers windows; one permute after attention merges them back.
The linears that act on the map (qkv, proj, MLP, patch merging) are `ChannelsLastLinear`: plain
`nn.Linear` parameters, trained in fp32 as 1x1 convolutions on AMD CPUs, where oneDNN is faster than MKL's
sgemm (`convolutions_pay_for_fp32_linears`), and as plain matrix products elsewhere. In
inference on the CPU (no gradient to compute) they run as oneDNN's fused linear instead, the first MLP
linear with its GELU in the same kernel (`onednn_inference_dtype`): the op inductor's CPU fusion calls.

Classes: `SwinTinyModel` (the trunk, final norm and pooling), `SwinTinyForImageClassification` (plus a
linear classifier) and `SwinTinyBackbone` (per-stage feature maps for detection and segmentation heads,
through transformers' `BackboneMixin`). The three share one state-dict layout for the trunk, so any
folder we save opens with `AutoModel`, `AutoModelForImageClassification` and `AutoBackbone`.

Any input size runs, as in the original Swin: the image is padded with zeros (right, bottom) to a multiple
of the patch, each block pads its normalised map to a multiple of its window and crops back after attention,
and patch merging pads an odd side. Windows never change (the bias tables are sized for them); shifts follow
the map's size (`SwinStage`). At `config.image_size` nothing is padded and the computation is unchanged.

Under `torch.export` (and so `torch.onnx.export`) the model runs attention as explicit matmul + softmax
and its linears as plain matrix products: the same arithmetic in portable ops, which survive the
exporter's decompositions (a fused attention kernel's output strides change there, and a view of it fails).

Module names (the state-dict layout) are listed in `convert.py`, which maps timm's and
transformers' checkpoints onto them.
"""

from __future__ import annotations

import functools
import math
import platform
import re
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import ModelOutput, logging

try:  # transformers >= 5.x keeps it at the top level; the older path warns
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # pragma: no cover
    from transformers.utils.backbone_utils import BackboneMixin

from .configuration_swin_tiny import PROBLEM_TYPES, SwinTinyConfig
from .windows import relative_position_index, shift_attention_mask

logger = logging.get_logger(__name__)

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
IGNORE_INDEX = -100  # a class id that adds no loss (transformers' convention; Trainer does not count it either)
# Written into every saved config.json: any folder we save opens with each of these Auto classes, as
# remote code where this package is not installed (transformers itself writes only the saved class's).
AUTO_MAP = {
    "AutoConfig": "configuration_swin_tiny.SwinTinyConfig",
    "AutoModel": "modeling_swin_tiny.SwinTinyModel",
    "AutoModelForImageClassification": "modeling_swin_tiny.SwinTinyForImageClassification",
    "AutoBackbone": "modeling_swin_tiny.SwinTinyBackbone",
}


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `rate`, rescale the rest."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ..., 1)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this PyTorch has oneDNN's fused linear, `torch.ops.mkldnn._linear_pointwise` (what inductor's CPU
    fusion calls; in x86 builds)."""
    try:
        torch.ops.mkldnn._linear_pointwise  # noqa: B018 (looked up: missing in builds without oneDNN)
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


@functools.cache
def onednn_bf16_supported() -> bool:
    """Whether oneDNN has bf16 kernels on this CPU (AVX-512 or AMX; inductor asks the same). Without them its bf16
    linear would be emulated, and PyTorch's own bf16 path stays."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the query: PyTorch's own bf16 path
        return False


def derivative_transform_active() -> bool:
    """Whether forward-mode AD (a dual level) or a `torch.func` transform (jvp, vmap, grad) is active. Both are read
    from private PyTorch state; where a version lacks it, the answer is True: PyTorch's own path, never a lost
    tangent."""
    dual_level = getattr(forward_ad, "_current_level", None)
    functorch_level = getattr(torch._C._functorch, "maybe_current_level", None)
    if dual_level is None or functorch_level is None:
        return True
    return dual_level >= 0 or functorch_level() is not None


def onednn_inference_dtype(x: torch.Tensor, linear: nn.Linear) -> torch.dtype | None:
    """The dtype in which `linear` runs on `x` through oneDNN's fused linear, or None for PyTorch's own path.

    Only for inference on the CPU, on weights in memory: that op has no derivative, so any gradient to compute
    (grad mode on and the input or a parameter needing one, forward-mode AD, a `torch.func` transform) keeps
    PyTorch's path, as do graphs being compiled, exported or traced (they keep portable ops), oneDNN switched off
    (`torch.backends.mkldnn.enabled`), fp16, float64, mixed dtypes, bf16 on a CPU without oneDNN's bf16 kernels, and
    weights elsewhere than the CPU (on the meta device while offloaded). Under bf16 autocast it is bf16, what
    autocast makes of fp32 and bf16 operands.
    """
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing():
        return None  # first: a compiler reads none of what follows
    if x.device.type != "cpu" or not onednn_linear_available() or not torch.backends.mkldnn.enabled:
        return None
    parameters = (linear.weight,) if linear.bias is None else (linear.weight, linear.bias)
    if any(p.device.type != "cpu" for p in parameters):
        return None
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in parameters)):
        return None
    if derivative_transform_active():
        return None
    dtypes = {x.dtype, *(p.dtype for p in parameters)}
    if torch.is_autocast_enabled("cpu"):
        autocast = torch.get_autocast_dtype("cpu")
        fits = autocast == torch.bfloat16 and dtypes <= {torch.float32, torch.bfloat16}
        return autocast if fits and onednn_bf16_supported() else None
    if dtypes == {torch.float32} or (dtypes == {torch.bfloat16} and onednn_bf16_supported()):
        return x.dtype
    return None


def onednn_linear(x: torch.Tensor, linear: nn.Linear, dtype: torch.dtype, activation: str = "none") -> torch.Tensor:
    """`activation(linear(x))` in one oneDNN kernel, in `dtype` (see `onednn_inference_dtype`):
    (..., in) -> (..., out). activation: "none" or "gelu" (exact, erf-based, as `F.gelu`)."""
    bias = None if linear.bias is None else linear.bias.to(dtype)
    return torch.ops.mkldnn._linear_pointwise(x.to(dtype), linear.weight.to(dtype), bias, activation, [], "none")


X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})  # `platform.machine()`, lower-cased
X86_VENDORS = ("GenuineIntel", "AuthenticAMD", "HygonGenuine")  # CPUID's vendor strings


def vendor_in(text: str) -> str:
    """The first x86 vendor string in `text` (/proc/cpuinfo, or Windows' `platform.processor()`), or ""."""
    match = re.search(r"\b(" + "|".join(X86_VENDORS) + r")\b", text)
    return match.group(1) if match else ""


def cpu_vendor() -> str:
    """This x86 CPU's vendor as CPUID names it ("GenuineIntel", "AuthenticAMD", "HygonGenuine"), or "" where it is
    not x86 or cannot be read. Linux lists it in /proc/cpuinfo (its first lines), Windows in `platform.processor()`;
    elsewhere (macOS) it is not read, and no subprocess is started for it (`platform.processor()` runs `uname -p`
    on other systems)."""
    if platform.machine().lower() not in X86_MACHINES:
        return ""
    if sys.platform == "win32":
        return vendor_in(platform.processor())  # e.g. "AMD64 Family 26 Model 2 Stepping 0, AuthenticAMD"
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return vendor_in(f.read(4096))
    except OSError:  # no /proc (macOS, a sandbox): unknown
        return ""


def convolutions_pay_for_fp32_linears(vendor: str) -> bool:
    """Whether `ChannelsLastLinear` should train its fp32 linears as oneDNN 1x1 convolutions on a CPU of `vendor`
    (`cpu_vendor`): on AMD's, and only there, it pays.

    PyTorch sends fp32 matrix products to MKL's sgemm, which takes its AVX2 path on AMD CPUs: there oneDNN's
    convolution, with AVX-512, was 2x faster forward and 1.7x forward and backward at this model's shapes (AMD Zen
    5; 1.08x inference and 1.03x training with oneDNN capped at AVX2). On Intel's CPUs MKL runs AVX-512, and the
    convolution loses: on a Xeon of the 5th generation (family 6 model 207) a training step's linears took 1.35x
    as long as MKL's, about 3x at the last stage's 2x2 maps (BENCHMARKS.md). Other CPUs (ARM, other
    vendors) were not measured, and keep PyTorch's own path, the plain linear.
    """
    return vendor == "AuthenticAMD"


# Decided once, at import: a compiler traces no file read, and every forward of a process takes the same kernels.
FP32_LINEARS_AS_CONVOLUTIONS = convolutions_pay_for_fp32_linears(cpu_vendor())


def runs_its_own_forward(module: nn.Module) -> bool:
    """Whether calling `module` would run nothing but `ChannelsLastLinear.forward`: the module is one, unwrapped
    (PEFT's adapters replace it with a wrapper), its `forward` not replaced on the instance (accelerate's hooks, for
    offloading or device maps, do that), and no forward hooks on it or on every module. Only then may its caller
    fuse the next operation into it."""
    if type(module) is not ChannelsLastLinear or "forward" in vars(module):
        return False
    hooks = module._forward_hooks or module._forward_pre_hooks
    global_hooks = nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks
    return not hooks and not global_hooks


class ChannelsLastLinear(nn.Linear):
    """`nn.Linear` (same parameters, same state dict) that trains as a 1x1 convolution on AMD CPUs' feature maps.

    On CPU, PyTorch sends fp32 matmuls to MKL's sgemm and convolutions to oneDNN. On AMD CPUs, where MKL takes
    its AVX2 path, oneDNN is about 2x faster forward and 1.7x forward + backward for this model's (tokens x
    channels) shapes, so there (`convolutions_pay_for_fp32_linears`) an fp32 map runs as a 1x1 convolution: a
    channels-last (B, H, W, C) map already is the NHWC layout it reads and writes, so the two permutes below
    are views, not copies. With oneDNN capped at AVX2 (an AMD CPU without AVX-512) the whole model still gains,
    less: 1.08x inference and 1.03x training against plain `nn.Linear` (BENCHMARKS.md). On Intel's CPUs MKL runs
    AVX-512 and the plain linear is faster, so it stays. The gain is fp32's: in bf16 (autocast or bf16 weights)
    matmuls already go to oneDNN's bf16 GEMM, which trains 1.2x faster than its 1x1 convolution, so bf16 takes
    the plain `nn.Linear`, as do other inputs (2-D, CUDA) and exported graphs (ONNX has plain matrix products for
    this). Inference on the CPU (no gradient to compute, see `onednn_inference_dtype`) takes oneDNN's fused
    linear, in fp32 and bf16, wherever PyTorch has it: it has no backward, and is 1.1x the convolution forward in
    fp32 on AMD and about as fast as MKL's linear on Intel (0.97-1.1x a forward's linears), with the MLP's GELU in
    the same kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (dtype := onednn_inference_dtype(x, self)) is not None:
            return onednn_linear(x, self, dtype)  # inference on the CPU: oneDNN's matmul, 1.1x the convolution
        if (
            not FP32_LINEARS_AS_CONVOLUTIONS  # first: a constant, and on all but AMD CPUs the answer
            or x.ndim != 4
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or torch.is_autocast_enabled("cpu")
            or torch.compiler.is_exporting()
        ):
            return super().forward(x)
        weight = self.weight[:, :, None, None]  # (out, in) -> (out, in, 1, 1), a view
        x = F.conv2d(x.permute(0, 3, 1, 2), weight, self.bias)  # (B, C, H, W) in NHWC memory -> (B, out, H, W)
        return x.permute(0, 2, 3, 1)  # (B, H, W, out)


class PatchEmbedding(nn.Module):
    """Non-overlapping patches to tokens: Conv2d(kernel = stride = patch) then an optional LayerNorm."""

    def __init__(self, config: SwinTinyConfig):
        super().__init__()
        self.projection = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps) if config.patch_norm else nn.Identity()
        self.patch_size = config.patch_size  # kept here: an adapter that wraps the projection (PEFT) hides its kernel

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # In the weights' dtype, as transformers' ViT does: the image processor gives float32, a model loaded with
        # dtype=torch.bfloat16 (or float16) takes it as its own. Under autocast the weights are float32: no cast.
        if (dtype := self.projection.weight.dtype).is_floating_point:  # not a quantized projection's integers
            pixel_values = pixel_values.to(dtype)
        p = self.patch_size
        pad_h, pad_w = -pixel_values.shape[2] % p, -pixel_values.shape[3] % p
        if pad_h or pad_w:  # any size: zeros right and bottom, up to a multiple of the patch (as the original Swin)
            pixel_values = F.pad(pixel_values, (0, pad_w, 0, pad_h))  # (B, C_in, ceil(H/p)*p, ceil(W/p)*p)
        x = self.projection(pixel_values)  # (B, C_in, H, W) -> (B, D, H/p, W/p)
        x = x.permute(0, 2, 3, 1)  # (B, H/p, W/p, D), channels-last
        return self.norm(x)


def eager_window_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    dropout: float,
    weights_shape: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v, also returning the weights.

    Args:
        query, key, value: (B', G, N, d) where G groups heads (and windows, for shifted blocks).
        mask: (1, G, N, N) additive: relative position bias plus the shift mask.
        weights_shape: the shape in which to return the weights, a view of (B', G, N, N).
    Returns:
        output (B', G, N, d) and the attention weights in `weights_shape`. The output is computed from that
        view of the weights, so they are part of the graph: `retain_grad()` on them gets the gradient.
    """
    B, G, N, d = query.shape
    # 3-D batched products on views: bmm reads the transposed keys in place (a 4-D matmul would copy them)
    scores = torch.bmm(query.flatten(0, 1), key.flatten(0, 1).transpose(1, 2))  # (B'*G, N, N)
    scores = scores.view(B, G, N, N) * d**-0.5 + mask  # (B', G, N, N)
    # In the scores' dtype: PyTorch's softmax already accumulates bf16 and fp16 in fp32 and rounds once (the values
    # of an fp32 softmax then cast, bf16 bit for bit, tested); asking for fp32 adds a cast each way, forward and
    # backward, which took 1-2% of a bf16 training step on the CPU (BENCHMARKS.md). GPU autocast runs softmax in
    # fp32 itself: the weights come back to the scores' dtype (a no-op elsewhere), as the products and the
    # returned attentions take them.
    weights = scores.softmax(dim=-1).to(scores.dtype).view(weights_shape)
    output = torch.bmm(F.dropout(weights.view(B * G, N, N), p=dropout), value.flatten(0, 1))  # (B'*G, N, d)
    return output.view(B, G, N, d), weights


def sdpa_is_slower(query: torch.Tensor, mask: torch.Tensor) -> bool:
    """Whether `scaled_dot_product_attention` is slower here than its math as two matrix products and a softmax
    (`eager_window_attention`): on the CPU, in two cases, at this model's windows (4-64 tokens, head size 32-48).

    - bf16 or fp16: PyTorch's CPU flash kernel and its math fallback convert the inputs to fp32 first. Measured on
      an AMD Zen 5 CPU (AVX512-BF16), bf16, per block: 3-4x slower forward and 1.2-4x slower forward and backward;
      taking the products made the whole model 9-14% faster under bf16 autocast (BENCHMARKS.md). fp16 takes the
      same path (the same kernels convert it the same way).
    - A gradient to compute for the mask, which holds the learned relative position bias (training, or gradients
      taken in eval mode): the CPU flash kernel has no mask gradient, so PyTorch runs its math fallback, the same
      products and softmax with the scale applied to the queries and the keys apart and a softmax that guards
      fully masked rows (none here: every token sees itself). Measured on an Intel Xeon (family 6 model 207),
      fp32, forward and backward per block: the products took 0.79-0.91x SDPA's time, 0.84x over the model's 12
      blocks (BENCHMARKS.md, `benchmarks/attention_kernels.py`).

    Elsewhere SDPA stays: fp32 inference (its fused kernel, 1.13-1.19x faster than the products at 64-token windows
    on that Xeon, 1.07x over all blocks), frozen bias tables (as PEFT's adapters leave them: the fused kernel
    computes the gradients of q, k and v), GPUs.
    """
    if query.device.type != "cpu":
        return False
    return query.dtype in (torch.bfloat16, torch.float16) or (torch.is_grad_enabled() and mask.requires_grad)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside MxM windows with a learned relative position bias (W-MSA / SW-MSA).

    Takes the (already normalised and, for SW-MSA, rolled) full feature map and returns the attended
    map. The relative position bias and the shift mask are added as one mask, so PyTorch's fused
    `scaled_dot_product_attention` does the work when `config._attn_implementation == "sdpa"`, except where it
    is slower than the explicit products (`sdpa_is_slower`: on the CPU in bf16 and fp16, and in training).
    """

    def __init__(self, config: SwinTinyConfig, dim: int, num_heads: int, window: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.window = window
        self.qkv = ChannelsLastLinear(dim, 3 * dim, bias=config.qkv_bias)
        self.proj = ChannelsLastLinear(dim, dim)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.proj_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, M*M, M*M): the learned bias of each token pair, looked up by relative offset."""
        n = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # (N*N, heads)
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)

    def attention_mask(self, shift_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The one additive mask of this block: relative position bias, plus the shift mask for SW-MSA.

        Returns (1, heads, N, N) for W-MSA, (1, nW*heads, N, N) for SW-MSA, in `dtype`. Built on every call
        from the bias table as it is now, never cached: a cache keyed on the table goes stale when weights
        change without bumping its version (writes through `.data`, fused optimizers), and building the mask
        is a few small ops: 1-2% of a batch-64 forward at 64 px measured on two shared cores, where caching it
        changed throughput by less than the noise (benchmarks/cache_worth.py).
        """
        bias = self.relative_position_bias()  # (heads, N, N)
        if shift_mask is None:
            mask = bias.unsqueeze(0)  # (1, heads, N, N)
        else:
            mask = (shift_mask.unsqueeze(1) + bias.unsqueeze(0)).flatten(0, 1).unsqueeze(0)  # (1, nW*heads, N, N)
        return mask.to(dtype)

    def forward(
        self, x: torch.Tensor, shift_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Args:
            x: (B, H, W, C) feature map, H and W multiples of the window.
            shift_mask: (nW, N, N) additive mask of the shifted blocks (0 / -inf), or None for W-MSA.
        Returns:
            (B, H, W, C) and, if asked, the attention weights (B, nW, heads, N, N).
        """
        B, H, W, C = x.shape
        M, heads, d = self.window, self.num_heads, self.head_dim
        nWh, nWw = H // M, W // M
        qkv = self.qkv(x)  # (B, H, W, 3C)
        qkv = qkv.view(B, nWh, M, nWw, M, 3, heads, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7)  # (3, B, nWh, nWw, heads, M, M, d): one copy, windows + heads
        qkv = qkv.reshape(3, B, nWh * nWw, heads, M * M, d)  # (3, B, nW, heads, N, d)

        if shift_mask is None:
            # Every window shares the same mask: batch the windows, broadcast over them.
            q, k, v = qkv.flatten(1, 2).unbind(0)  # each (B*nW, heads, N, d)
        else:
            # Each window has its own mask: group windows with heads so one 4-D mask broadcasts over the batch.
            q, k, v = qkv.flatten(2, 3).unbind(0)  # each (B, nW*heads, N, d)
        mask = self.attention_mask(shift_mask, q.dtype)  # (1, heads or nW*heads, N, N)
        dropout = self.attention_dropout if self.training else 0.0

        implementation = self.config._attn_implementation or "sdpa"
        weights = None
        # Exported graphs take the explicit math: see the module docstring. So do reduced precisions and training on
        # the CPU (see `sdpa_is_slower`), where the weights are computed and dropped.
        explicit = output_attentions or implementation == "eager" or torch.compiler.is_exporting()
        if explicit or sdpa_is_slower(q, mask):
            out, weights = eager_window_attention(q, k, v, mask, dropout, (B, nWh * nWw, heads, M * M, M * M))
            weights = weights if output_attentions else None
        elif implementation == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            raise ValueError(
                f"attn_implementation={implementation!r} is not supported by SwinTiny; "
                f"expected one of {ATTENTION_IMPLEMENTATIONS}."
            )
        # Both groupings share one memory layout: (B, nWh, nWw, heads, M, M, d).
        out = out.view(B, nWh, nWw, heads, M, M, d)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, C)  # (B, nWh, M, nWw, M, heads, d) -> (B, H, W, C)
        out = self.proj_dropout(self.proj(out))
        return out, weights


class MLP(nn.Module):
    def __init__(self, config: SwinTinyConfig, dim: int):
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = ChannelsLastLinear(dim, hidden)
        self.fc2 = ChannelsLastLinear(hidden, dim)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if runs_its_own_forward(self.fc1) and (dtype := onednn_inference_dtype(x, self.fc1)) is not None:
            hidden = onednn_linear(x, self.fc1, dtype, "gelu")  # inference on the CPU: GELU in the product's kernel
        else:
            hidden = F.gelu(self.fc1(x))
        return self.dropout(self.fc2(self.dropout(hidden)))


class SwinBlock(GradientCheckpointingLayer):
    """Pre-norm Swin block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x))).

    Odd blocks of a stage (`shifted`) are SW-MSA blocks: the map is rolled by -shift before attention and
    back after, with the shift the stage chooses for the map's size (0 where a window covers the map). A map
    whose sides are not multiples of the window is padded with zeros (right and bottom) after the norm and
    cropped back after attention, as in the original Swin; at the config's size nothing is padded.
    """

    def __init__(self, config: SwinTinyConfig, dim: int, num_heads: int, window: int, shifted: bool, drop_path: float):
        super().__init__()
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = WindowAttention(config, dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = MLP(config, dim)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        hidden_states: torch.Tensor,
        shift: int = 0,
        shift_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """hidden_states: (B, H, W, C) -> (B, H, W, C). `shift` and `shift_mask` are the stage's for this size; a
        block that is not `shifted` ignores them."""
        B, H, W, C = hidden_states.shape
        x = self.norm1(hidden_states)
        M = self.attention.window
        pad_h, pad_w = -H % M, -W % M
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C): zeros right and bottom, Hp, Wp multiples of M
        if self.shifted and shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))  # (B, Hp, Wp, C), cyclic shift
            x, weights = self.attention(x, shift_mask, output_attentions)
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))  # undo the shift
        else:
            x, weights = self.attention(x, None, output_attentions)
        if pad_h or pad_w:
            x = x[:, :H, :W]  # (B, H, W, C), the padding dropped
        hidden_states = hidden_states + self.drop_path(x)
        hidden_states = hidden_states + self.drop_path(self.mlp(self.norm2(hidden_states)))
        return hidden_states, weights


class PatchMerging(nn.Module):
    """2x downsampling: concatenate each 2x2 neighbourhood, LayerNorm(4C), Linear(4C, 2C) without bias."""

    def __init__(self, config: SwinTinyConfig, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=config.layer_norm_eps)
        self.reduction = ChannelsLastLinear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2 or x.shape[2] % 2:  # any size: an odd side gets a row or column of zeros (right, bottom)
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))  # (B, H + H%2, W + W%2, C)
        B, H, W, C = x.shape
        x = x.view(B, H // 2, 2, W // 2, 2, C)  # (B, H/2, row, W/2, col, C)
        # Order (row, col) = (0,0), (1,0), (0,1), (1,1), as in the paper: column-major inside the 2x2 cell.
        x = x.permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, 2C)


class SwinStage(nn.Module):
    """The blocks of one resolution, alternating W-MSA and SW-MSA, and the patch merging that follows them.

    The window is fixed at construction (the bias tables are sized for it): the config's, clipped to the stage's
    resolution at `config.image_size`. Maps of other sizes are padded to a multiple of it, never clipped. The
    shifted blocks shift by window // 2 where the map is larger than one window, else not at all: the rule of
    the original Swin and of transformers' Swin, taken for each input size (at `config.image_size` it gives
    `config.stage_shifts`). The shift mask is built on every forward, for the map's padded size, on the input's
    device: a few small ops, under 0.01% of a batch-64 forward (benchmarks/cache_worth.py), where a buffer of
    the config's size would be a second path, and one that the meta device leaves empty until `_init_weights`.
    """

    def __init__(self, config: SwinTinyConfig, index: int, drop_path_rates: list[float]):
        super().__init__()
        dim = config.embed_dim * 2**index
        self.window = config.stage_windows[index]
        self.blocks = nn.ModuleList(
            SwinBlock(
                config,
                dim,
                config.num_heads[index],
                self.window,
                shifted=j % 2 == 1,
                drop_path=drop_path_rates[j],
            )
            for j in range(config.depths[index])
        )
        self.downsample = PatchMerging(config, dim) if index < config.num_layers - 1 else None

    def shift_for(self, height: int, width: int) -> int:
        """Shift of the SW-MSA blocks on a height x width map: window // 2, or 0 where one window covers it."""
        return self.window // 2 if min(height, width) > self.window else 0

    def shift_mask_for(self, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """The shift mask (nW, N, N) of a height x width map (before padding), on `device`; None where the blocks
        do not shift."""
        shift = self.shift_for(height, width)
        if not shift:
            return None
        Hp, Wp = math.ceil(height / self.window) * self.window, math.ceil(width / self.window) * self.window
        return shift_attention_mask(Hp, Wp, self.window, shift, device)  # the mask of the padded map

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(B, H, W, C) -> the stage's output (B, H, W, C) (before the patch merging) and the blocks' attentions."""
        H, W = hidden_states.shape[1:3]
        shift = self.shift_for(H, W)
        shift_mask = self.shift_mask_for(H, W, hidden_states.device)
        attentions = ()
        for block in self.blocks:
            hidden_states, weights = block(hidden_states, shift, shift_mask, output_attentions)
            if output_attentions:
                attentions += (weights,)
        return hidden_states, attentions


class SwinTinyPreTrainedModel(PreTrainedModel):
    config_class = SwinTinyConfig
    base_model_prefix = "swin"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["SwinBlock"]

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # transformers guesses this from the module source; WindowAttention reads
        # config._attn_implementation on every call, so switching at any time is safe.
        return True

    def forward_options(
        self,
        unexpected: dict,
        output_hidden_states: bool | None,
        output_attentions: bool | None,
        return_dict: bool | None,
    ) -> tuple[bool, bool, bool]:
        """The start of every forward here: the output switches, each the config's where the caller gave None.

        `unexpected` is the forward's **kwargs, which it takes only so that transformers' clients can pass what they
        know: any key in it is a ValueError, so that a misspelt argument is not silently ignored.
        """
        if unexpected:
            raise ValueError(f"{type(self).__name__}.forward got unexpected arguments {sorted(unexpected)}.")
        config = self.config
        return (
            config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            config.output_attentions if output_attentions is None else output_attentions,
            config.return_dict if return_dict is None else return_dict,
        )

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, with an `auto_map` for every Auto class (see AUTO_MAP)."""
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original Swin's (and timm's) initialisation.

        Linear weights and relative position bias tables: truncated normal, std initializer_range; linear
        biases 0; LayerNorm 1 and 0; the patch-embedding convolution keeps PyTorch's own init (Kaiming
        uniform, a=sqrt(5)), which the original leaves in place. Also rebuilds the relative position index, a
        non-persistent buffer: `from_pretrained` builds the model on the meta device, and the index is not in
        the checkpoint.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):
            # nn.Conv2d.reset_parameters, through transformers' init (which skips loaded weights)
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, WindowAttention):
            init.trunc_normal_(module.relative_position_bias_table, std=std)
            init.copy_(module.relative_position_index, relative_position_index(module.window))


def check_pixel_values(pixel_values: torch.Tensor, config: SwinTinyConfig) -> None:
    """Raise a ValueError naming what was expected and what was received."""
    if not isinstance(pixel_values, torch.Tensor):
        raise ValueError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
    expected = f"(batch, {config.num_channels}, height, width)"
    if pixel_values.ndim != 4:
        raise ValueError(f"pixel_values must be 4-D {expected}, got shape {tuple(pixel_values.shape)}.")
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be a floating-point tensor (normalised pixels), got dtype {pixel_values.dtype}; "
            "use the model's image processor."
        )
    if pixel_values.shape[1] != config.num_channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels, expected {config.num_channels} "
            f"(shape {expected}, got {tuple(pixel_values.shape)})."
        )
    if min(pixel_values.shape[2:]) == 0:
        raise ValueError(f"pixel_values has an empty spatial size {tuple(pixel_values.shape[2:])}.")


class SwinTrunk:
    """What `SwinTinyModel` and `SwinTinyBackbone` share: the patch embedding and stages, and the forward through
    them. Each model gives `output_from_stages`, which turns the trunk's maps into its output.

    A mixin, not a module: it puts its modules on the model itself, so both models keep the state-dict
    names `embeddings.*` and `stages.*` and load each other's weights.
    """

    def build_trunk(self, config: SwinTinyConfig) -> None:
        self.embeddings = PatchEmbedding(config)
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        total = sum(config.depths)
        # Block i of N gets rate * i / (N - 1): 0 for the first block, drop_path_rate for the last.
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(config.depths[:i]) for i in range(config.num_layers)]
        self.stages = nn.ModuleList(
            SwinStage(config, i, rates[starts[i] : starts[i] + config.depths[i]]) for i in range(config.num_layers)
        )

    def get_input_embeddings(self) -> nn.Conv2d:
        """The patch embedding's projection: the layer whose weights embed the input (pixels, here), as
        `embed_tokens` does for text. `enable_input_require_grads` hooks its output, so PEFT and gradient
        checkpointing on a frozen trunk get gradients through the blocks."""
        return self.embeddings.projection

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embeddings.projection = value

    def run_trunk(
        self, pixel_values: torch.Tensor, output_hidden_states: bool, output_attentions: bool
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """pixel_values (B, C_in, H, W), any H and W ->
        - the stage maps: the patch embedding (B, H/p, W/p, D), then each stage's output before its patch
          merging (B, H_i, W_i, C_i), channels-last ("stem", "stage1", ...); the last is the trunk's output
          (the last stage has no merging). Sides are rounded up: H_0 = ceil(H/p), H_i+1 = ceil(H_i / 2);
        - if asked, the same maps as tokens (B, H_i*W_i, C_i), the hidden states;
        - if asked, the attention weights of every block.
        Hidden states and attentions are the tensors that the computation goes on from (the maps above are views
        of the tokens), so `retain_grad()` on them gets their gradient.
        """
        check_pixel_values(pixel_values, self.config)
        stage_maps, hidden_states, attentions = [], [], ()

        def keep(x: torch.Tensor) -> torch.Tensor:
            if output_hidden_states:
                tokens = x.flatten(1, 2)  # (B, H_i, W_i, C_i) -> (B, H_i*W_i, C_i)
                hidden_states.append(tokens)
                x = tokens.unflatten(1, x.shape[1:3])  # (B, H_i, W_i, C_i), a view: the graph goes on from tokens
            stage_maps.append(x)
            return x

        x = keep(self.embedding_dropout(self.embeddings(pixel_values)))  # (B, ceil(H/p), ceil(W/p), D)
        for stage in self.stages:
            x, stage_attentions = stage(x, output_attentions)  # (B, H_i, W_i, C_i)
            attentions += stage_attentions
            x = keep(x)
            if stage.downsample is not None:
                x = stage.downsample(x)  # (B, ceil(H_i/2), ceil(W_i/2), 2*C_i)
        hidden_states = tuple(hidden_states) if output_hidden_states else None
        attentions = attentions if output_attentions else None
        return stage_maps, hidden_states, attentions

    def output_from_stages(
        self,
        stage_maps: list[torch.Tensor],
        hidden_states: tuple[torch.Tensor, ...] | None,
        attentions: tuple[torch.Tensor, ...] | None,
    ) -> ModelOutput:
        """The model's output from what `run_trunk` returns."""
        raise NotImplementedError

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ModelOutput | tuple:
        """pixel_values (B, C_in, H, W), any H and W -> the model's output (see its class), a tuple unless
        return_dict. Output switches left None take the config's values; other keyword arguments are refused."""
        output_hidden_states, output_attentions, return_dict = self.forward_options(
            kwargs, output_hidden_states, output_attentions, return_dict
        )
        stage_maps, hidden_states, attentions = self.run_trunk(pixel_values, output_hidden_states, output_attentions)
        output = self.output_from_stages(stage_maps, hidden_states, attentions)
        return output if return_dict else output.to_tuple()


class SwinTinyModel(SwinTrunk, SwinTinyPreTrainedModel):
    """Swin backbone: patch embedding, four stages, final LayerNorm and average pooling.

    Takes images of any size (see `SwinStage`). Outputs `BaseModelOutputWithPooling` with last_hidden_state
    (B, tokens, C) and pooler_output (B, C); with output_hidden_states, hidden_states[0] is the patch embedding
    and hidden_states[i] the output of stage i (before its patch merging), each (B, tokens_i, C_i), one more
    than `config.num_hidden_layers` (the stages), as transformers' Swin. With output_attentions, one
    (B, nW, heads, N, N) tensor of attention weights per block (transformers' Swin returns only each stage's
    last), nW counting the windows of the map padded to a multiple of the window, N = window**2; rows are
    softmax distributions over the window's tokens, shifted blocks in the rolled order. Both are the tensors
    the computation uses, so `retain_grad()` on them gets their gradient.
    """

    def __init__(self, config: SwinTinyConfig):
        super().__init__(config)
        self.build_trunk(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def output_from_stages(
        self,
        stage_maps: list[torch.Tensor],
        hidden_states: tuple[torch.Tensor, ...] | None,
        attentions: tuple[torch.Tensor, ...] | None,
    ) -> BaseModelOutputWithPooling:
        """The last stage's map, normalised as tokens and mean-pooled."""
        last_hidden_state = self.norm(stage_maps[-1].flatten(1, 2))  # (B, H_n, W_n, C) -> (B, tokens, C)
        pooled = last_hidden_state.mean(dim=1)  # (B, C)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            hidden_states=hidden_states,
            attentions=attentions,
        )


def infer_problem_type(labels: torch.Tensor, num_labels: int) -> str:
    """transformers' rule for `config.problem_type=None` (`ForSequenceClassificationLoss`), to the dtype: one
    label is regression; int64 or int32 labels are class ids; anything else (float, other integer dtypes) is
    multi-label targets."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    problem_type: str,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of the classifier head, as transformers' `ForSequenceClassificationLoss` computes it, and where
    that one raises or broadcasts, a ValueError or one of this project's extras.

    logits: (B, K). By problem type:
    - "regression": mean squared error; labels (B,) or (B, 1) when K = 1, else (B, K); any numeric dtype.
    - "single_label_classification": cross-entropy on integer class ids (B,) or (B, 1) in [0, K), where
      -100 adds nothing (transformers' ignore index); or, an extra, float soft targets (B, K) (Mixup, CutMix,
      label smoothing): the soft-target cross-entropy -sum_k t_k log p_k per sample.
    - "multi_label_classification": binary cross-entropy with logits on (B, K) targets, float or integer.
    Computed in float32 whatever the logits' dtype (bf16 autocast).

    Without `num_items_in_batch` the loss is the mean over its terms (samples; label entries for MSE and
    BCE), as transformers'. With it, as transformers' Trainer passes it under gradient accumulation, the loss
    is the batch's summed loss divided by the items of the whole accumulated step, so that the micro-batches'
    gradients add up to the full batch's; an extra for regression and multi-label, where transformers' loss
    ignores it. Items are counted as Trainer counts them, label entries that are not -100: samples for class
    ids; B x K for (B, K) targets, of which a soft-target cross-entropy counts one term per sample.
    """
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}.")
    batch, num_labels = logits.shape
    labels = labels.to(logits.device)
    logits = logits.float()
    entries_per_term = 1  # label entries that one term of `losses` stands for
    if problem_type == "regression":
        if num_labels == 1 and labels.shape in ((batch,), (batch, 1)):
            logits, labels = logits.view(batch), labels.reshape(batch)  # (B, 1) -> (B,): never a (B, B) broadcast
        elif labels.shape != logits.shape:
            expected = f"({batch},) or ({batch}, 1)" if num_labels == 1 else str((batch, num_labels))
            raise ValueError(f"regression labels must have shape {expected}, got {tuple(labels.shape)}.")
        losses = F.mse_loss(logits, labels.float(), reduction="none")
    elif problem_type == "multi_label_classification":
        if labels.shape != logits.shape:
            raise ValueError(
                f"multi-label labels must have shape (batch, num_labels) = {(batch, num_labels)}, got "
                f"{tuple(labels.shape)}; class ids are int64 (or int32): problem_type=None reads other dtypes as "
                "multi-label targets, as transformers does."
            )
        losses = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    elif labels.is_floating_point():
        if labels.shape != logits.shape:
            raise ValueError(
                f"soft-target labels must have shape (batch, num_labels) = {(batch, num_labels)}, got "
                f"{tuple(labels.shape)}; class ids must be an integer tensor of shape ({batch},)."
            )
        losses = F.cross_entropy(logits, labels.float(), reduction="none")  # (B,)
        entries_per_term = num_labels
    else:
        if labels.shape not in ((batch,), (batch, 1)) or labels.dtype == torch.bool:
            raise ValueError(
                f"class-id labels must be integers of shape ({batch},) or ({batch}, 1), got {labels.dtype} of shape "
                f"{tuple(labels.shape)}."
            )
        labels = labels.reshape(batch).long()  # (B,)
        counted = labels != IGNORE_INDEX
        wrong = counted & ((labels < 0) | (labels >= num_labels))
        # Checked in eager mode only: a compiled or exported graph cannot branch on a tensor's value (it would break
        # `fullgraph=True`); there cross-entropy itself rejects an id out of range.
        if not torch.compiler.is_compiling() and wrong.any():
            raise ValueError(
                f"class-id labels must lie in [0, {num_labels}) or be {IGNORE_INDEX} (ignored), got "
                f"{sorted(set(labels[wrong].tolist()))}."
            )
        losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")  # (B,), 0 if ignored
        if num_items_in_batch is None:
            return losses.sum() / counted.sum()  # the mean over counted labels: F.cross_entropy's (NaN if none)
    if num_items_in_batch is None:
        return losses.mean()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(losses.device)
    return losses.sum() / (num_items_in_batch / entries_per_term)


def looks_like_soft_targets(labels: torch.Tensor, num_labels: int) -> bool:
    """Float (B, num_labels) rows of probabilities: what Mixup, CutMix and label smoothing make."""
    if not labels.is_floating_point() or labels.ndim != 2 or labels.shape[1] != num_labels or num_labels < 2:
        return False
    return bool(((labels >= 0).all() & (labels.sum(-1) - 1).abs().lt(1e-3).all()).item())


@torch.compiler.disable
def record_problem_type(config: SwinTinyConfig, labels: torch.Tensor) -> None:
    """As transformers' models: where `config.problem_type` is None, the first labels decide it (see
    `infer_problem_type`), and the choice is kept (and saved) in the config, with a warning for float rows that sum to
    1 (soft targets read as multi-label). Outside any compiled graph: it validates the config and reads the labels'
    values. A compiled forward breaks its graph here once, on its first labels, and recompiles without it; with
    `fullgraph=True` set `config.problem_type` first."""
    config.problem_type = infer_problem_type(labels, config.num_labels)
    if config.problem_type == "multi_label_classification" and looks_like_soft_targets(labels, config.num_labels):
        logger.warning(
            "Float labels whose rows sum to 1 were read as multi-label targets (binary cross-entropy), "
            "transformers' rule where config.problem_type is None. For soft targets (Mixup, CutMix, "
            "label smoothing) set problem_type='single_label_classification': a soft-target "
            "cross-entropy."
        )


class SwinTinyForImageClassification(SwinTinyPreTrainedModel):
    """Swin backbone with a linear classifier on the pooled features; returns `ImageClassifierOutput`."""

    # transformers' Trainer passes num_items_in_batch (and then leaves the gradient-accumulation scaling
    # to the model) to models that accept loss keyword arguments.
    accepts_loss_kwargs = True

    def __init__(self, config: SwinTinyConfig):
        super().__init__(config)
        self.swin = SwinTinyModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """save_pretrained, with the image-classification pipeline of `pipeline_swin_tiny.py` named in config.json
        (`custom_pipelines`); that file is copied beside the weights with this one (a relative import)."""
        from .pipeline_swin_tiny import CUSTOM_PIPELINES

        self.config.custom_pipelines = CUSTOM_PIPELINES
        return super().save_pretrained(save_directory, *args, **kwargs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """
        Args:
            pixel_values: (B, C_in, H, W), normalised by the model's image processor (which resizes to
                `config.image_size`, the size the classifier was trained at); any H and W run.
            labels: by `config.problem_type` (see `classification_loss`): class ids (B,), or float soft targets
                (B, num_labels) for Mixup/CutMix, for "single_label_classification"; (B, num_labels) targets for
                "multi_label_classification"; values (B,) or (B, num_labels) for "regression". Where
                `problem_type` is None, these first labels set it as transformers' models do: regression if
                num_labels == 1, else single-label for int64/int32 labels, else multi-label.
            num_items_in_batch: label entries in the whole accumulated step (what transformers' Trainer passes
                under gradient accumulation); the loss is then summed over the batch and divided by it.
        """
        output_hidden_states, output_attentions, return_dict = self.forward_options(
            kwargs, output_hidden_states, output_attentions, return_dict
        )
        outputs = self.swin(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                record_problem_type(self.config, labels)
            loss = classification_loss(logits, labels, self.config.problem_type, num_items_in_batch)
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class SwinTinyBackbone(SwinTrunk, BackboneMixin, SwinTinyPreTrainedModel):
    """Hierarchical feature maps for dense prediction heads (FPN, UperNet, Mask R-CNN, ...).

    The trunk of `SwinTinyModel` (same weights, same state-dict names, so a classifier's folder loads as
    a backbone; only the per-stage norms are new), returning the stages named in `config.out_features`
    ("stem", "stage1" ... "stage4") as `BackboneOutput.feature_maps`, each (B, C_i, H_i, W_i) after a
    LayerNorm of its own, as transformers' `SwinBackbone` does. `channels` lists C_i per output.
    With output_hidden_states, `hidden_states` are `SwinTinyModel`'s: the stem and each stage's
    output, (B, H_i*W_i, C_i), before the norms.
    """

    # A classifier's checkpoint has a final norm and a head that a backbone has no use for.
    _keys_to_ignore_on_load_unexpected = [r"^(swin\.)?norm\.", r"^classifier\."]

    def __init__(self, config: SwinTinyConfig):
        super().__init__(config)
        self.build_trunk(config)
        # channels of "stem", "stage1", ...: the embedding's, then each stage's output
        self.num_features = [config.embed_dim] + [config.embed_dim * 2**i for i in range(config.num_layers)]
        self.hidden_states_norms = nn.ModuleDict(
            {
                name: nn.LayerNorm(channels, eps=config.layer_norm_eps)
                for name, channels in zip(self.out_features, self.channels)
            }
        )
        self.post_init()

    def output_from_stages(
        self,
        stage_maps: list[torch.Tensor],
        hidden_states: tuple[torch.Tensor, ...] | None,
        attentions: tuple[torch.Tensor, ...] | None,
    ) -> BackboneOutput:
        """The maps of `out_features`, each through its own norm, channels-first."""
        feature_maps = tuple(
            self.hidden_states_norms[name](stage_maps[index]).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
            for name, index in zip(self.out_features, self.out_indices)
        )
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states, attentions=attentions)


def no_weight_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of parameters that take no weight decay: biases, normalisation weights, bias tables.

    The rule, not a list: every parameter with fewer than two dimensions (biases, LayerNorm weights)
    and every relative position bias table.
    """
    return {
        name
        for name, parameter in model.named_parameters()
        if parameter.ndim < 2 or name.endswith("relative_position_bias_table")
    }


# save_pretrained writes auto_map and copies this file (and its relative imports) beside the weights, so
# that a saved folder loads with trust_remote_code=True where this package is not installed. Registered
# here, not in the package's __init__, so that a class loaded as remote code saves its code too.
SwinTinyModel.register_for_auto_class("AutoModel")
SwinTinyForImageClassification.register_for_auto_class("AutoModelForImageClassification")
SwinTinyBackbone.register_for_auto_class("AutoBackbone")

__all__ = [
    "SwinTinyPreTrainedModel",
    "SwinTinyModel",
    "SwinTinyForImageClassification",
    "SwinTinyBackbone",
    "no_weight_decay_parameter_names",
]
