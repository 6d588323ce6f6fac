"""SwinTinyConfig: the single source of truth for every size in the model.

Defaults are the Tiny ImageNet model of the reference design (64 px, 200 classes). The classic
ImageNet Swin-T is the same class with::

    SwinTinyConfig(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)

Everything is validated here, so that a bad size fails with a message naming the field instead of a shape error
deep inside forward; and every way of setting a field (the constructor, an alias such as `num_attention_heads`,
`from_pretrained(folder, **overrides)`, `from_dict`, assignment after construction, `update`) goes through the same
rules and gives the same message. The label fields (`id2label`, `label2id`, `num_labels`, `wordnet_ids`) describe one
label set: replacing it (a new head) replaces every one of them, so that a saved folder always loads.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from functools import cache

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

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# The fields that name the classes of the head: they change together (see `SwinTinyConfig._with_overrides`).
_LABEL_FIELDS = ("id2label", "label2id", "num_labels", "wordnet_ids")
_BACKBONE_OUTPUTS = ("out_features", "out_indices")


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def _int_keys(id2label):
    """id2label with int keys (JSON gives strings), or unchanged where a key is no index (the config refuses it)."""
    try:
        return {int(key): name for key, name in id2label.items()}
    except (AttributeError, TypeError, ValueError):
        return id2label


def _id2label_from_label2id(label2id) -> dict | None:
    """The id2label that `label2id` is the inverse of, or None where its values are no indices."""
    try:
        return {int(index): name for name, index in label2id.items()}
    except (AttributeError, TypeError, ValueError):
        return None


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
        num_labels (`int`, defaults to 200): classes of the classification head. Given to `from_pretrained` (or
            assigned) with another count than the folder's, it is a new head: `id2label` becomes `LABEL_0`, ... and
            the folder's `label2id` and `wordnet_ids` go with its old head, as transformers' `num_labels` setter does.
        id2label (`dict[int, str]`, *optional*): the name of each class, keyed by class index 0 .. num_labels - 1.
        label2id (`dict[str, int]`, *optional*): its inverse; derived from id2label where not given (or where it does
            not invert id2label, with a warning), and the source of id2label where only it is given.
        problem_type (`str`, *optional*): one of "regression", "single_label_classification",
            "multi_label_classification" (see `classification_loss`), or None to infer it from the labels.
        out_features (`list[str]`, *optional*): the feature maps `SwinTinyBackbone` returns, by stage name: "stem"
            (the patch embedding) or "stage1" ... "stageN" (the output of stage i, before its patch merging), in
            order. Defaults to the last stage. Classification models ignore it.
        out_indices (`list[int]`, *optional*): the same as indices into `stage_names` (0 is "stem"); give either,
            or both if they agree.
        wordnet_ids (`list[str]`, *optional*): the WordNet id of each class, in class order, when the classes are
            ImageNet synsets; `id2label` then holds their readable names (see `imagenet_classes.py`). A new label set
            (another `id2label`, `label2id` or `num_labels`) drops them unless they are given with it.
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
        self._take_aliases(kwargs)
        derived_sizes = self._keep_unknown_arguments(kwargs)
        kwargs.pop("model_type", None)
        self._settle_labels(kwargs.pop("num_labels", None))
        # JSON gives lists back; keep lists so a saved and reloaded config compares equal.
        self.depths = _as_list(self.depths)
        self.num_heads = _as_list(self.num_heads)
        if (
            isinstance(self.window_size, int)
            and not isinstance(self.window_size, bool)
            and isinstance(self.depths, list)
        ):
            self.window_size = [self.window_size] * len(self.depths)
        self.window_size = _as_list(self.window_size)
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
        self._validate_problem_type(self.problem_type)
        super().__post_init__(**kwargs)  # checks problem_type "single_label_classification" against num_labels

    def _take_aliases(self, kwargs: dict) -> None:
        """`num_attention_heads=...` sets num_heads before validation (the alias is another name for the field, as
        in transformers' `attribute_map`). Given with a num_heads other than the default and not equal, it is
        ambiguous and refused."""
        for alias, name in self.attribute_map.items():
            if alias not in kwargs or name not in self.__dataclass_fields__:
                continue
            value, current = kwargs.pop(alias), getattr(self, name)
            if _as_list(current) not in (_as_list(self.__dataclass_fields__[name].default), _as_list(value)):
                raise ValueError(
                    f"{alias}={value!r} and {name}={current!r} disagree: {alias} is another name for {name}; "
                    f"give one of them."
                )
            setattr(self, name, value)

    def _settle_labels(self, num_labels) -> None:
        """Make id2label, label2id, num_labels and wordnet_ids describe one label set, or refuse them.

        id2label is the source of truth (the model's output i is class id2label[i]); without it, label2id's
        inverse, else num_labels generic names (`LABEL_0`, ...), else the 200 Tiny ImageNet classes. Done before
        transformers' own `__post_init__`, which would otherwise let a disagreeing num_labels replace id2label."""
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels <= 0
        ):
            raise ValueError(f"num_labels={num_labels!r} must be a positive integer.")
        if self.id2label is None and self.label2id is not None:
            self.id2label = _id2label_from_label2id(self.label2id)
            if self.id2label is None or sorted(self.id2label) != list(range(len(self.label2id))):
                raise ValueError(
                    f"label2id={self.label2id!r} must map each class name to its index 0 .. "
                    f"{len(self.label2id) - 1}, once each."
                )
        if self.id2label is None:
            self.id2label = {i: f"LABEL_{i}" for i in range(200 if num_labels is None else num_labels)}
        given = self.id2label
        if not isinstance(given, dict) or not given:
            raise ValueError(f"id2label={given!r} must be a dict from class index to name, with 1 or more.")
        self.id2label = _int_keys(given)
        if sorted(self.id2label, key=str) != sorted(range(len(given)), key=str):
            raise ValueError(
                f"id2label={given!r} must map the class indices 0 .. {len(given) - 1} (one per output of the head) "
                f"to names, got the keys {sorted(given, key=str)}."
            )
        if num_labels is not None and num_labels != len(self.id2label):
            raise ValueError(
                f"num_labels={num_labels} disagrees with id2label, which names {len(self.id2label)} classes; give one "
                f"of them."
            )
        inverse = {name: i for i, name in self.id2label.items()}
        if self.label2id is None:
            self.label2id = inverse
        elif _id2label_from_label2id(self.label2id) != self.id2label or len(self.label2id) != len(inverse):
            logger.warning(
                f"label2id={self.label2id!r} is not the inverse of id2label, which names the head's classes; it is "
                f"replaced by {inverse!r}."
            )
            self.label2id = inverse
        if self.wordnet_ids is not None:
            ids = self.wordnet_ids
            if not isinstance(ids, (list, tuple)) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"wordnet_ids must be a list of strings (one per class), got {ids!r}.")
            if len(ids) != len(self.id2label):
                raise ValueError(f"wordnet_ids has {len(ids)} entries but the model has {len(self.id2label)} labels.")
            self.wordnet_ids = list(ids)

    @staticmethod
    def _validate_problem_type(problem_type) -> None:
        if problem_type is not None and problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type={problem_type!r} must be one of {PROBLEM_TYPES} or None.")

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

    # ----------------------------------------------------------------------------------------- setting fields
    @classmethod
    @cache
    def _settable_names(cls) -> frozenset[str]:
        """Names whose values are validated wherever they are set: our fields, their aliases, the derived sizes
        (which must agree with the fields), the labels, problem_type and the backbone's outputs."""
        own = {name for name in cls.__annotations__ if not name.startswith("_")}
        derived = {name for name in dir(cls) if isinstance(getattr(cls, name, None), property)} & {
            "hidden_size",
            "num_layers",
        }
        return frozenset(own | derived | set(cls.attribute_map) | {"problem_type", *_LABEL_FIELDS, *_BACKBONE_OUTPUTS})

    @classmethod
    def _with_overrides(cls, base: dict, overrides: dict) -> dict:
        """`base` (a config's values) with `overrides` applied, as one set of constructor arguments.

        A field's alias counts as the field. Overrides that give a new label set (an id2label or label2id that
        differs from base's, or a num_labels other than its count) drop base's other label fields: they named the
        old head's classes (a num_labels equal to the count keeps the names, as transformers' setter does). New
        backbone outputs replace both of base's, and new depths drop base's outputs where they were the default
        (the last stage), so that the default follows the stages."""
        merged, overrides = dict(base), dict(overrides)
        for alias, name in cls.attribute_map.items():
            if alias in overrides and name in cls.__dataclass_fields__:
                value = overrides.pop(alias)
                if name in overrides and _as_list(overrides[name]) != _as_list(value):
                    raise ValueError(
                        f"{alias}={value!r} and {name}={overrides[name]!r} disagree: {alias} is another name for "
                        f"{name}; give one of them."
                    )
                overrides[name] = value
        old_labels = _int_keys(base["id2label"]) if base.get("id2label") is not None else None
        if "id2label" in overrides:
            new_labels = _int_keys(overrides["id2label"])
        elif "label2id" in overrides:
            new_labels = _id2label_from_label2id(overrides["label2id"])
        elif "num_labels" in overrides and old_labels is not None and overrides["num_labels"] == len(old_labels):
            del overrides["num_labels"]  # the same head: its names stay
            new_labels = old_labels
        else:
            new_labels = old_labels if "num_labels" not in overrides else None
        if new_labels != old_labels or ("num_labels" in overrides and old_labels is None):
            for name in ("id2label", "label2id", "wordnet_ids", "num_labels"):
                if name not in overrides:
                    merged.pop(name, None)
        if any(name in overrides for name in _BACKBONE_OUTPUTS):
            for name in ("out_features", "out_indices", "_out_features", "_out_indices"):
                merged.pop(name, None)
        elif "depths" in overrides:
            stages = len(_as_list(base.get("depths", cls.__dataclass_fields__["depths"].default)))
            outputs = base.get("out_features", base.get("_out_features"))
            if outputs is None or list(outputs) == [f"stage{stages}"]:
                for name in ("out_features", "out_indices", "_out_features", "_out_indices"):
                    merged.pop(name, None)
        merged.update(overrides)
        return merged

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> SwinTinyConfig:
        """transformers' `from_dict`, except that keyword arguments naming our fields (or their aliases, the
        labels, ...) are applied before the config is built, and so validated as the constructor validates them;
        transformers sets them as attributes afterwards. `from_pretrained(folder, **overrides)` comes here."""
        settable = cls._settable_names()
        overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in settable}
        return super().from_dict(cls._with_overrides(config_dict, overrides), **kwargs)

    def update(self, config_dict: dict) -> None:
        """Set several attributes at once; our fields among them are validated together, as one new config would be
        (so that coupled fields, such as image_size and window_size, can change together)."""
        if not self.__dict__.get("_post_init_done"):
            return super().update(config_dict)
        settable = self._settable_names()
        for name, value in config_dict.items():
            if name not in settable:
                super().__setattr__(name, value)
        overrides = {name: value for name, value in config_dict.items() if name in settable}
        if not overrides:
            return
        # transformers checks problem_type against num_labels when a config is built, not on assignment (its common
        # test_problem_types sets problem_type, then num_labels=1); the value itself is checked here, the pair in
        # `validate` (so before saving: every saved folder loads).
        problem_type = overrides.pop("problem_type", self.problem_type)
        self._validate_problem_type(problem_type)
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        candidate = type(self)(**self._with_overrides({**current, "problem_type": None}, overrides))
        for name in [f.name for f in fields(self)] + ["stage_names"]:
            self.__dict__[name] = candidate.__dict__[name]
        self.__dict__["problem_type"] = problem_type

    def __setattr__(self, name, value):
        """After construction, assigning one of our fields (or an alias, a label field, ...) validates it as the
        constructor does, with the same message, and leaves the config unchanged if it is refused."""
        if self.__dict__.get("_post_init_done") and name in self._settable_names():
            self.update({name: value})
        else:
            super().__setattr__(name, value)

    def to_diff_dict(self) -> dict:
        """transformers' diff against `PreTrainedConfig()`, keeping the labels always: transformers leaves out an
        id2label equal to its default (2 generic labels), which our default (200 classes) would replace on loading."""
        diff, full = super().to_diff_dict(), self.to_dict()
        for name in ("id2label", "label2id"):
            diff[name] = full[name]
        return diff

    def validate(self) -> None:
        """transformers' class validators (run by `save_pretrained`), and the one rule of the constructor that an
        assignment may leave unmet (see `update`), so that no folder is saved that would not load."""
        super().validate()
        if self.problem_type == "single_label_classification" and self.num_labels == 1:
            raise ValueError(
                'problem_type="single_label_classification" requires num_labels > 1, got num_labels=1. For binary '
                'classification use num_labels=2, or problem_type="regression" for a single-output regression head.'
            )

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
        for name in ("depths", "num_heads", "window_size"):
            value = getattr(self, name)
            if not isinstance(value, list):
                either = "a positive integer (every stage) or " if name == "window_size" else ""
                raise ValueError(f"{name}={value!r} must be {either}a list of positive integers, one per stage.")
        if len(self.depths) == 0:
            raise ValueError("depths=[] must name at least one stage.")
        for name in ("depths", "num_heads", "window_size"):
            values = getattr(self, name)
            if len(values) != len(self.depths):
                raise ValueError(
                    f"{name}={values!r} has {len(values)} entries but depths={self.depths!r} has {len(self.depths)}: "
                    f"give one per stage."
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
                    f"num_heads[{i}]={heads} does not divide the stage's channels embed_dim * 2**{i} = "
                    f"{self.embed_dim} * {2**i} = {channels}."
                )
        for name in (
            "mlp_ratio",
            "drop_path_rate",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "layer_norm_eps",
            "initializer_range",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}={value!r} must be a number.")
        for name in ("qkv_bias", "patch_norm"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False.")
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
