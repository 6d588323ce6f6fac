"""SwinTinyConfig: the single source of truth for every size in the model.

Defaults are the Tiny ImageNet model of the reference design (64 px, 200 classes). The classic
ImageNet Swin-T is the same class with::

    SwinTinyConfig(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)

Everything is validated here, when the config is built, so that a bad size fails with a message
naming the field instead of a shape error deep inside forward.
"""

from __future__ import annotations

import difflib
from dataclasses import fields

from transformers import PreTrainedConfig

# Keyword arguments that transformers itself passes to a config's __post_init__ (from config.json
# or from `from_pretrained(..., **kwargs)`); anything else that is not a field is a typo.
_TRANSFORMERS_KWARGS = frozenset(
    {
        "num_labels",
        "torch_dtype",
        "name_or_path",
        "_name_or_path",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "model_type",
        "auto_map",
    }
)


class SwinTinyConfig(PreTrainedConfig):
    r"""Configuration of a Swin Transformer for small images.

    Args:
        image_size (`int`, defaults to 64): side of the square input image, in pixels.
        patch_size (`int`, defaults to 4): side of a patch; the first stage sees image_size / patch_size tokens a side.
        num_channels (`int`, defaults to 3): channels of the input image.
        embed_dim (`int`, defaults to 96): channels of stage 1; stage i has embed_dim * 2**i.
        depths (`list[int]`, defaults to `[2, 2, 6, 2]`): Swin blocks per stage.
        num_heads (`list[int]`, defaults to `[2, 4, 8, 16]`): attention heads per stage. Tiny ImageNet uses 48-dim
            heads (96 / 2), half the heads of ImageNet Swin-T, as the reference design did.
        window_size (`int` or `list[int]`, defaults to `[8, 8, 4, 2]`): attention window side per stage; an int means
            every stage. A window not smaller than its stage's resolution is clipped to it and that stage does not
            shift, as in the original Swin (at 64 px only stage 1 shifts).
        mlp_ratio (`float`, defaults to 4.0): hidden width of the MLP relative to the block's channels.
        qkv_bias (`bool`, defaults to `True`): whether the query/key/value projection has a bias.
        drop_path_rate (`float`, defaults to 0.2): stochastic depth rate of the last block; it rises linearly from 0.
        hidden_dropout_prob (`float`, defaults to 0.0): dropout after the MLP and the attention projection.
        attention_probs_dropout_prob (`float`, defaults to 0.0): dropout on the attention weights.
        patch_norm (`bool`, defaults to `True`): LayerNorm after the patch embedding (the paper and every published
            checkpoint have it; the reference notebook did not).
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the truncated normal init of linear layers and bias
            tables.
        num_labels (`int`, defaults to 200): classes of the classification head.
    """

    model_type = "swin_tiny"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "num_layers"}

    image_size: int = 64
    patch_size: int = 4
    num_channels: int = 3
    embed_dim: int = 96
    depths: list[int] | tuple[int, ...] = (2, 2, 6, 2)
    num_heads: list[int] | tuple[int, ...] = (2, 4, 8, 16)
    window_size: int | list[int] | tuple[int, ...] = (8, 8, 4, 2)
    mlp_ratio: float | int = 4.0
    qkv_bias: bool = True
    drop_path_rate: float | int = 0.2
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    patch_norm: bool = True
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        unknown = sorted(set(kwargs) - _TRANSFORMERS_KWARGS)
        if unknown:
            field_names = [f.name for f in fields(self)]
            hints = [
                f"{name!r} (did you mean {match[0]!r}?)"
                if (match := difflib.get_close_matches(name, field_names, 1))
                else repr(name)
                for name in unknown
            ]
            raise ValueError(f"SwinTinyConfig got unknown arguments: {', '.join(hints)}. Valid fields: {field_names}.")
        kwargs.pop("model_type", None)
        if self.id2label is None:
            kwargs.setdefault("num_labels", 200)
        # JSON gives lists back; keep lists so a saved and reloaded config compares equal.
        self.depths = list(self.depths)
        self.num_heads = list(self.num_heads)
        self.window_size = (
            [self.window_size] * len(self.depths) if isinstance(self.window_size, int) else list(self.window_size)
        )
        self._validate_sizes()
        super().__post_init__(**kwargs)

    # ----------------------------------------------------------------------------------------- derived sizes
    @property
    def num_layers(self) -> int:
        return len(self.depths)

    @property
    def hidden_size(self) -> int:
        """Channels of the last stage, which the classifier sees."""
        return self.embed_dim * 2 ** (self.num_layers - 1)

    @property
    def stage_resolutions(self) -> list[int]:
        """Token-grid side of each stage: image_size / patch_size, halved by each patch merging."""
        first = self.image_size // self.patch_size
        return [first // 2**i for i in range(self.num_layers)]

    @property
    def stage_windows(self) -> list[int]:
        """Window side of each stage after clipping to the stage's resolution."""
        return [min(w, r) for w, r in zip(self.window_size, self.stage_resolutions)]

    @property
    def stage_shifts(self) -> list[int]:
        """Cyclic shift of the odd blocks of each stage: window // 2, or 0 where the window covers the stage."""
        return [0 if r <= w else w // 2 for w, r in zip(self.window_size, self.stage_resolutions)]

    # ----------------------------------------------------------------------------------------- validation
    def _validate_sizes(self) -> None:
        for name in ("image_size", "patch_size", "num_channels", "embed_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer.")
        if len(self.depths) == 0:
            raise ValueError("depths=[] must name at least one stage.")
        for name in ("depths", "num_heads", "window_size"):
            values = getattr(self, name)
            if len(values) != len(self.depths):
                raise ValueError(
                    f"{name} has {len(values)} entries but depths has {len(self.depths)}: give one per stage."
                )
            for i, value in enumerate(values):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"{name}[{i}]={value!r} must be a positive integer.")
        reduction = self.patch_size * 2 ** (self.num_layers - 1)
        if self.image_size % reduction:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by patch_size * 2**(stages-1) = "
                f"{self.patch_size} * {2 ** (self.num_layers - 1)} = {reduction}, so that every patch merging "
                f"halves an even grid."
            )
        for i, (resolution, window) in enumerate(zip(self.stage_resolutions, self.stage_windows)):
            if resolution % window:
                raise ValueError(
                    f"window_size[{i}]={window} does not divide the stage resolution {resolution} "
                    f"(image_size {self.image_size} / patch_size {self.patch_size} / 2**{i})."
                )
        for i, heads in enumerate(self.num_heads):
            channels = self.embed_dim * 2**i
            if channels % heads:
                raise ValueError(
                    f"num_heads[{i}]={heads} does not divide the stage's channels embed_dim * 2**{i} = {channels}."
                )
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} must be positive.")
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"drop_path_rate={self.drop_path_rate} must satisfy 0 <= drop_path_rate < 1.")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must satisfy 0 <= {name} < 1.")
        if self.layer_norm_eps <= 0:
            raise ValueError(f"layer_norm_eps={self.layer_norm_eps} must be positive.")
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range={self.initializer_range} must be positive.")


__all__ = ["SwinTinyConfig"]
