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
from transformers.utils import logging

try:  # transformers >= 5.x keeps it at the top level; the older path warns
    from transformers.backbone_utils import BackboneConfigMixin
except ImportError:  # pragma: no cover
    from transformers.utils.backbone_utils import BackboneConfigMixin

logger = logging.get_logger(__name__)

# Keyword arguments that transformers itself passes to a config's __post_init__ (from config.json
# or from `from_pretrained(..., **kwargs)`); anything else that is not a field is kept with a warning.
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
        "custom_pipelines",  # the pipeline a saved classifier ships (transformers reads it in `pipeline`)
        "use_cache",  # transformers' Trainer sets it on every model's config, so saved configs carry it
        # the backbone's outputs (BackboneConfigMixin), and the stage names it derives (kept in config.json)
        "out_features",
        "out_indices",
        "stage_names",
    }
)


class SwinTinyConfig(BackboneConfigMixin, PreTrainedConfig):
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
            every stage. A window not smaller than its stage's resolution at `image_size` is clipped to it, for good
            (the bias tables are sized for it), and that stage does not shift at `image_size`, as in the original
            Swin (at 64 px only stage 1 shifts). Inputs of other sizes are padded to multiples of the windows and
            shift wherever a stage's map is larger than its window (see `SwinStage`).
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
        out_features (`list[str]`, *optional*): the feature maps `SwinTinyBackbone` returns, by stage name: "stem"
            (the patch embedding) or "stage1" ... "stageN" (the output of stage i, before its patch merging), in
            order. Defaults to the last stage. Classification models ignore it.
        out_indices (`list[int]`, *optional*): the same as indices into `stage_names` (0 is "stem"); give either,
            or both if they agree.
        wordnet_ids (`list[str]`, *optional*): the WordNet id of each class, in class order, when the classes are
            ImageNet synsets; `id2label` then holds their readable names (see `imagenet_classes.py`).
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
    wordnet_ids: list[str] | None = None
    # The backbone's outputs; set through out_features / out_indices (BackboneConfigMixin's properties).
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        derived_sizes = self._keep_unknown_arguments(kwargs)
        kwargs.pop("model_type", None)
        if self.wordnet_ids is not None and kwargs.get("num_labels", len(self.wordnet_ids)) != len(self.wordnet_ids):
            # num_labels replaces id2label (transformers' new-head idiom): the ids named the old head's classes
            self.wordnet_ids = None
        if self.id2label is None:
            kwargs.setdefault("num_labels", 200)
        # JSON gives lists back; keep lists so a saved and reloaded config compares equal.
        self.depths = list(self.depths)
        self.num_heads = list(self.num_heads)
        self.window_size = (
            [self.window_size] * len(self.depths) if isinstance(self.window_size, int) else list(self.window_size)
        )
        self._validate_sizes()
        for name, value in derived_sizes.items():
            actual = getattr(self, self.attribute_map.get(name, name))
            if value != actual:
                raise ValueError(
                    f"{name}={value!r} disagrees with the fields it is derived from, which give {name}={actual!r}; "
                    f"set the fields instead (embed_dim, depths, ...)."
                )
        kwargs.pop("stage_names", None)  # derived from depths, never read from config.json
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]
        out_features, out_indices = kwargs.pop("out_features", None), kwargs.pop("out_indices", None)
        if out_features is None and out_indices is None:  # keep what the dataclass was given (copy, replace)
            out_features, out_indices = self._out_features, self._out_indices
        self._validate_backbone_outputs(out_features, out_indices)
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__post_init__(**kwargs)
        if self.wordnet_ids is not None:
            ids = self.wordnet_ids
            if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"wordnet_ids must be a list of strings (one per class), got {ids!r}.")
            if len(ids) != self.num_labels:
                raise ValueError(f"wordnet_ids has {len(ids)} entries but the model has {self.num_labels} labels.")
            self.wordnet_ids = list(ids)

    def _keep_unknown_arguments(self, kwargs: dict) -> dict:
        """Keys that are no field of ours are kept as attributes, as `PreTrainedConfig` does: a folder saved by
        anyone loads (Trainer, PEFT and transformers' own tests annotate configs). A warning names each key and the
        closest field, since a misspelt size (`windw_size`) would otherwise go unnoticed. Keys that name a size
        derived from the fields (`hidden_size`, `num_hidden_layers`, ...) cannot be set: they are taken out of
        kwargs and returned, to be checked against the fields once those are validated."""
        unknown = sorted(set(kwargs) - _TRANSFORMERS_KWARGS)
        field_names = [f.name for f in fields(self) if not f.name.startswith("_")]
        hints, derived_sizes = [], {}
        for name in unknown:
            if isinstance(getattr(type(self), self.attribute_map.get(name, name), None), property):
                derived_sizes[name] = kwargs.pop(name)
                continue
            match = difflib.get_close_matches(name, field_names, 1)
            hints.append(f"{name!r} (closest field: {match[0]!r})" if match else repr(name))
        if hints:
            logger.warning(
                f"SwinTinyConfig got arguments that are none of its fields: {', '.join(hints)}. They are kept as "
                f"attributes and saved with the config, but the model does not read them. Fields: {field_names}."
            )
        return derived_sizes

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
        """Window side of each stage after clipping to the stage's resolution at image_size."""
        return [min(w, r) for w, r in zip(self.window_size, self.stage_resolutions)]

    @property
    def stage_shifts(self) -> list[int]:
        """Cyclic shift of the odd blocks of each stage at image_size: window // 2, or 0 where the window covers the
        stage."""
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

    def _validate_backbone_outputs(self, out_features, out_indices) -> None:
        """out_features: stage names in order without repeats; out_indices: the same as indices; they must agree."""
        names = self.stage_names
        if out_features is not None:
            if not isinstance(out_features, (list, tuple)) or not all(isinstance(n, str) for n in out_features):
                raise ValueError(f"out_features must be a list of stage names from {names}, got {out_features!r}.")
            unknown = [n for n in out_features if n not in names]
            if unknown:
                raise ValueError(
                    f"out_features={list(out_features)} names {unknown}, which this model does not have: its stages "
                    f"are {names} ({len(self.depths)} stages from depths={self.depths})."
                )
            if list(out_features) != [n for n in names if n in out_features] or len(set(out_features)) != len(
                out_features
            ):
                ordered = [n for n in names if n in out_features]
                raise ValueError(
                    f"out_features={list(out_features)} must list stages once each, shallow to deep: {ordered}."
                )
        if out_indices is not None:
            if not isinstance(out_indices, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in out_indices
            ):
                raise ValueError(f"out_indices must be a list of integers, got {out_indices!r}.")
            bad = [i for i in out_indices if not -len(names) <= i < len(names)]
            if bad:
                raise ValueError(
                    f"out_indices={list(out_indices)} has {bad}, outside [0, {len(names)}) for stages {names}."
                )
            positive = [i % len(names) for i in out_indices]
            if positive != sorted(set(positive)):
                raise ValueError(
                    f"out_indices={list(out_indices)} must list stages once each, shallow to deep: "
                    f"{sorted(set(positive))}."
                )
            if out_features is not None and [names[i] for i in positive] != list(out_features):
                raise ValueError(
                    f"out_features={list(out_features)} and out_indices={list(out_indices)} name different stages "
                    f"({[names[i] for i in positive]}); give one of them."
                )


# config.save_pretrained writes auto_map (see modeling_swin_tiny.py)
SwinTinyConfig.register_for_auto_class()

__all__ = ["SwinTinyConfig"]
