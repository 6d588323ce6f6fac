"""Convert published Swin checkpoints (Microsoft's original, timm, transformers) to swin_tiny_hf's layout.

Our layout (SwinTinyForImageClassification; SwinTinyModel has the same names without `swin.` and no classifier):

    swin.embeddings.projection / swin.embeddings.norm
    swin.stages.{i}.blocks.{j}.{norm1, attention.qkv, attention.proj, attention.relative_position_bias_table,
                                norm2, mlp.fc1, mlp.fc2}
    swin.stages.{i}.downsample.{norm, reduction}         (end of stages 0 .. n-2)
    swin.norm, classifier

Layouts (found from the keys; `detect_layout`):
- "microsoft": the official Swin repository's checkpoints (swin_tiny_patch4_window7_224.pth, usually under a
  "model" key): fused `attn.qkv`, downsample at the *end* of stages 0..n-2 (`layers.{i}.downsample`, as ours),
  `head`. timm's `checkpoint_filter_fn` reads the same files.
- "timm": `timm.models.swin_transformer.SwinTransformer` (e.g. swin_tiny_patch4_window7_224): fused `attn.qkv`,
  downsample at the *start* of stages 1..n-1 (`layers.{i}.downsample`), `head.fc`.
- "transformers": `SwinForImageClassification` or `SwinModel`, with the v5 in-memory names (`attention.q_proj`,
  `layernorm_before`, ...) or the names its checkpoints are saved with (`attention.self.query`,
  `intermediate.dense`, ...). Separate q/k/v are concatenated into one qkv projection.

A checkpoint without a classification head (timm's `num_classes=0`, transformers' `SwinModel`) converts to a
base model, `SwinTinyModel`. Class names come from the checkpoint's own config (`label_names_from_config`:
transformers' `id2label`, timm's `label_names`); a 1,000-class head without names is taken as ImageNet-1k's.

Derived buffers that some checkpoints carry (`relative_position_index`, `attn_mask`) are checked
against our own geometry and then dropped. Every other source key must be used exactly once.

CLI::

    python -m swin_tiny_hf.convert --checkpoint swin_tiny.safetensors --output_dir swin-t-imagenet [--source timm]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import warnings
from pathlib import Path

import torch

from .configuration_swin_tiny import SwinTinyConfig
from .image_processing_swin_tiny import IMAGENET_MEAN, IMAGENET_STD, SwinTinyImageProcessor, make_image_processor
from .imagenet_classes import IMAGENET_1K_WORDNET_IDS, label_config
from .modeling_swin_tiny import SwinTinyForImageClassification, SwinTinyModel
from .windows import relative_position_index

LAYOUTS = ("microsoft", "timm", "transformers")
SOURCES = ("auto", *LAYOUTS)  # "auto": detect the layout from the keys
CHECKPOINT_FILES = ("model.safetensors", "pytorch_model.bin")  # what transformers and timm save in a folder
_SHOWN_KEYS = 6  # how many offending keys an error message names

_BLOCK_PARTS = {
    # Microsoft's and timm's
    "norm1": "norm1",
    "attn.qkv": "attention.qkv",
    "attn.proj": "attention.proj",
    "attn.relative_position_bias_table": "attention.relative_position_bias_table",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    # transformers v5 (in memory)
    "layernorm_before": "norm1",
    "attention.o_proj": "attention.proj",
    "attention.relative_position_bias.relative_position_bias_table": "attention.relative_position_bias_table",
    "layernorm_after": "norm2",
    # transformers checkpoints (as saved)
    "attention.output.dense": "attention.proj",
    "attention.self.relative_position_bias_table": "attention.relative_position_bias_table",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_QKV_PARTS = {  # transformers' separate projections -> index in our fused qkv
    "attention.q_proj": 0,
    "attention.k_proj": 1,
    "attention.v_proj": 2,
    "attention.self.query": 0,
    "attention.self.key": 1,
    "attention.self.value": 2,
}
_DERIVED = ("relative_position_index", "attn_mask")

_ORIGINAL_BLOCK = re.compile(
    r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$|"
    r"^layers\.(\d+)\.blocks\.(\d+)\.(attn\.relative_position_bias_table)()$"
)
_ORIGINAL_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$")


def _original_rules(head: str, downsample_offset: int) -> dict:
    """Microsoft's and timm's keys, which differ only in the head's name and in where the patch mergings sit."""
    return {
        "block": _ORIGINAL_BLOCK,
        "downsample": _ORIGINAL_DOWNSAMPLE,
        "fixed": {
            "patch_embed.proj": "swin.embeddings.projection",
            "patch_embed.norm": "swin.embeddings.norm",
            "norm": "swin.norm",
            head: "classifier",
        },
        "downsample_offset": downsample_offset,
    }


_PATTERNS = {
    "microsoft": _original_rules("head", downsample_offset=0),  # the merging that ends stage i, as ours
    "timm": _original_rules("head.fc", downsample_offset=-1),  # timm's stage i starts with our stage i-1's merging
    "transformers": {  # keys of a SwinModel are given the `swin.` prefix first (see convert_state_dict)
        "block": re.compile(
            r"^swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$|"
            r"^swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.*relative_position_bias_table)()$"
        ),
        "downsample": re.compile(r"^swin\.encoder\.layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$"),
        "fixed": {
            "swin.embeddings.patch_embeddings.projection": "swin.embeddings.projection",
            "swin.embeddings.norm": "swin.embeddings.norm",
            "swin.layernorm": "swin.norm",
            "classifier": "classifier",
        },
        "downsample_offset": 0,
    },
}


def _some(keys) -> str:
    """The first few of `keys`, for an error message."""
    keys = list(keys)
    shown = ", ".join(repr(k) for k in keys[:_SHOWN_KEYS])
    return shown + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def unwrap_checkpoint(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The state dict inside a training checkpoint ({'model': ...}, {'state_dict': ...}, {'state_dict_ema': ...},
    as Microsoft's and timm's training scripts save them), or the checkpoint itself if it is one."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"expected a state dict (a dict of tensors), got a {type(checkpoint).__name__}.")
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(
            f"expected a state dict (a dict of tensors, possibly under 'model' or 'state_dict'), but "
            f"{_some(not_tensors)} are not tensors."
        )
    return checkpoint


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """Which of LAYOUTS a Swin state dict is in, from its keys; a ValueError naming some keys if none.

    Microsoft's and timm's keys differ only in where the patch mergings sit and in the head's name. As timm's
    `checkpoint_filter_fn`, a merging in `layers.0` marks Microsoft's layout (timm's stage 0 has none); a
    headless one-stage checkpoint has no merging either, and then the two layouts are the same.
    """
    keys = set(state_dict)
    if any(k.startswith(("swin.encoder.layers.", "encoder.layers.")) for k in keys):
        return "transformers"
    if "patch_embed.proj.weight" in keys and any(_ORIGINAL_BLOCK.match(k) for k in keys):
        original = {k for k in keys if k.startswith("layers.0.downsample.") or k in ("head.weight", "head.bias")}
        timm_only = {k for k in keys if k.startswith("head.fc.")}
        if original and timm_only:
            raise ValueError(
                f"the checkpoint mixes Microsoft's layout ({_some(sorted(original))}) with timm's "
                f"({_some(sorted(timm_only))}); convert it from one of them."
            )
        return "microsoft" if original else "timm"
    raise ValueError(
        f"not a Swin checkpoint in a layout this converter knows ({', '.join(LAYOUTS)}): its {len(keys)} keys "
        f"include {_some(sorted(keys))}; expected keys such as 'layers.0.blocks.0.attn.qkv.weight' and "
        f"'patch_embed.proj.weight' (Microsoft, timm) or 'swin.encoder.layers.0.blocks.0.layernorm_before.weight' "
        f"(transformers)."
    )


def _check_derived(key: str, tensor: torch.Tensor) -> None:
    """A stored relative index must equal ours; a stored shift mask is rebuilt by the model anyway."""
    if key.endswith("relative_position_index"):
        window = math.isqrt(math.isqrt(tensor.numel()))  # the index holds (M*M)^2 entries
        expected = relative_position_index(window)
        if tensor.numel() != expected.numel() or not torch.equal(tensor.reshape(expected.shape).long(), expected):
            raise ValueError(f"{key} does not match the relative position index of a {window}x{window} window.")


def convert_state_dict(state_dict: dict[str, torch.Tensor], source: str = "auto") -> dict[str, torch.Tensor]:
    """Map a Microsoft, timm or transformers Swin state dict onto SwinTinyForImageClassification's names.

    `state_dict` may be a training checkpoint that holds it under 'model' or 'state_dict'. `source` is one of
    SOURCES; "auto" detects the layout, and a named one must agree with the detected layout. A checkpoint
    without a head gives no `classifier.*` keys (see `model_from_state_dict`). Raises ValueError for an unknown
    source or layout, a disagreeing source, a patch merging outside stages 0..n-2, or unused source keys
    (naming them).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    state_dict = unwrap_checkpoint(state_dict)
    layout = detect_layout(state_dict)
    if source not in ("auto", layout):
        raise ValueError(
            f"source={source!r}, but the checkpoint is in the {layout} layout ({_layout_evidence(state_dict, layout)})"
            f"; pass source={layout!r} or 'auto'."
        )
    original_names = {key: key for key in state_dict}
    if layout == "transformers" and not any(k.startswith("swin.") for k in state_dict):
        original_names = {f"swin.{k}": k for k in state_dict}  # SwinModel: the base model's own names
        state_dict = {f"swin.{k}": v for k, v in state_dict.items()}
    rules = _PATTERNS[layout]
    converted: dict[str, torch.Tensor] = {}
    qkv: dict[str, list[torch.Tensor | None]] = {}
    downsample_sources: dict[int, str] = {}
    unused: list[str] = []

    for key, tensor in state_dict.items():
        if key.rsplit(".", 1)[-1] in _DERIVED:
            _check_derived(key, tensor)
            continue
        stem, _, leaf = key.rpartition(".")
        if stem in rules["fixed"] and leaf in ("weight", "bias"):
            converted[f"{rules['fixed'][stem]}.{leaf}"] = tensor
            continue
        if match := rules["downsample"].match(key):
            stage = int(match.group(1)) + rules["downsample_offset"]
            downsample_sources[stage] = key
            converted[f"swin.stages.{stage}.downsample.{match.group(2)}.{match.group(3)}"] = tensor
            continue
        if match := rules["block"].match(key):
            groups = [g for g in match.groups() if g is not None]
            stage, block, part = int(groups[0]), int(groups[1]), groups[2]
            leaf = groups[3] if len(groups) > 3 and groups[3] else None
            prefix = f"swin.stages.{stage}.blocks.{block}"
            if part in _QKV_PARTS and leaf is not None:
                qkv.setdefault(f"{prefix}.attention.qkv.{leaf}", [None, None, None])[_QKV_PARTS[part]] = tensor
                continue
            if part in _BLOCK_PARTS:
                name = f"{prefix}.{_BLOCK_PARTS[part]}"
                converted[f"{name}.{leaf}" if leaf else name] = tensor
                continue
        unused.append(original_names[key])

    for name, parts in qkv.items():
        if any(p is None for p in parts):
            missing = [("query", "key", "value")[i] for i, p in enumerate(parts) if p is None]
            raise ValueError(f"{name}: the source has no {', '.join(missing)} projection for this block.")
        converted[name] = torch.cat(parts, dim=0)  # (3C, C) or (3C,): q, k, v stacked as in a fused qkv
    if unused:
        raise ValueError(
            f"{len(unused)} keys of the {layout} checkpoint were not used by the conversion: {_some(unused)}."
        )
    stages = {int(k.split(".")[2]) for k in converted if k.startswith("swin.stages.") and ".blocks." in k}
    misplaced = {s: key for s, key in downsample_sources.items() if s not in range(len(stages) - 1)}
    if misplaced:
        raise ValueError(
            f"in the {layout} layout, {_some(misplaced.values())} would be the patch merging at the end of stage "
            f"{_some(misplaced)}, but a model with {len(stages)} stages has them at the end of stages "
            f"0..{len(stages) - 2}: the checkpoint mixes layouts."
        )
    return converted


def _layout_evidence(state_dict: dict[str, torch.Tensor], layout: str) -> str:
    """The keys that show a state dict's layout, for a message."""
    telling = {
        "microsoft": lambda k: k.startswith(("layers.0.downsample.", "head.")),
        "timm": lambda k: ".downsample." in k or k.startswith("head.fc."),
        "transformers": lambda k: ".encoder.layers." in f".{k}",
    }[layout]
    return "keys such as " + _some(sorted(k for k in state_dict if telling(k)))


def label_names_from_config(config: dict) -> dict[int, str] | None:
    """Class names from a checkpoint's config, index -> name; None if it names none.

    Reads transformers' `config.json` (`id2label`; transformers' placeholders "LABEL_i" name nothing), timm's
    hub `config.json` (`label_names`, at the top or in `pretrained_cfg`, a list or an index -> name dict) and a
    timm model's `pretrained_cfg` itself.
    """
    if config.get("id2label"):
        names = {int(i): str(name) for i, name in config["id2label"].items()}
        return None if all(name == f"LABEL_{i}" for i, name in names.items()) else names
    label_names = config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names")
    if not label_names:
        return None
    if isinstance(label_names, dict):
        return {int(i): str(name) for i, name in label_names.items()}
    return {i: str(name) for i, name in enumerate(label_names)}


def settings_from_source_config(source_config: dict | None) -> dict:
    """The SwinTinyConfig settings that a checkpoint's own config.json fixes and its weights do not show.

    A transformers config gives `layer_norm_eps` (carried over). Settings this model cannot honour are refused
    with a ValueError naming them, rather than converted into a model that computes something else:
    `hidden_act` other than GELU (ours has GELU only), `layer_norm_eps` other than 1e-5 (transformers mixes it
    with 1e-5; ours has one eps) and `use_absolute_embeddings=True` (ours has no absolute
    position embedding). timm's configs (`pretrained_cfg`) hold no architecture settings beyond the weights';
    timm's Swin uses GELU and LayerNorm's default eps, as ours."""
    if not source_config or "pretrained_cfg" in source_config:
        return {}
    activation = source_config.get("hidden_act", "gelu")
    if activation != "gelu":
        raise ValueError(
            f"the checkpoint's config has hidden_act={activation!r}; swin_tiny's MLP uses 'gelu' only, so the "
            f"converted model would compute other outputs."
        )
    if source_config.get("use_absolute_embeddings"):
        raise ValueError(
            "the checkpoint's config has use_absolute_embeddings=True; swin_tiny has no absolute position "
            "embedding (expected use_absolute_embeddings=False)."
        )
    eps = source_config.get("layer_norm_eps", SwinTinyConfig.layer_norm_eps)
    if eps != SwinTinyConfig.layer_norm_eps:  # carried over, it would also change the embedding's and mergings' norms
        raise ValueError(
            f"the checkpoint's config has layer_norm_eps={eps}; transformers' Swin uses it in its blocks and final "
            f"norm but 1e-05 in the patch embedding and mergings, while swin_tiny has one eps for all (expected "
            f"layer_norm_eps={SwinTinyConfig.layer_norm_eps})."
        )
    return {"layer_norm_eps": eps}


def _mlp_ratio(state_dict: dict[str, torch.Tensor], embed_dim: int, num_stages: int) -> float:
    """The MLP's hidden width over its block's channels, read off every stage's fc1 (one ratio for all, as in
    SwinTinyConfig); a ValueError if the stages disagree."""
    ratios = []
    for stage in range(num_stages):
        dim = embed_dim * 2**stage  # channels double at every patch merging
        hidden = state_dict[f"swin.stages.{stage}.blocks.0.mlp.fc1.weight"].shape[0]  # (hidden, dim)
        ratios.append(hidden / dim)
    if len(set(ratios)) > 1:
        raise ValueError(f"the checkpoint's MLPs have hidden/channel ratios {ratios} by stage; swin_tiny has one.")
    ratio = ratios[0]
    return int(ratio) if ratio.is_integer() else ratio


def config_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    image_size: int = 224,
    id2label: dict[int, str] | None = None,
    source_config: dict | None = None,
) -> SwinTinyConfig:
    """Read the architecture off a converted state dict (sizes from weight shapes, the MLP ratio included).

    `id2label` names the head's classes (see `label_names_from_config`); WordNet ids among them become readable
    names, the ids kept in `config.wordnet_ids`. Without it, a 1,000-class head is ImageNet-1k's: its labels get
    the classes' names ("goldfish") and WordNet ids. A state dict without `classifier.*` (a base model) takes no
    names. `source_config` is the checkpoint's own config.json, if any: see `settings_from_source_config`."""
    settings = settings_from_source_config(source_config)
    projection = state_dict["swin.embeddings.projection.weight"]  # (D, C_in, p, p)
    depths, num_heads, windows = [], [], []
    stage = 0
    while f"swin.stages.{stage}.blocks.0.norm1.weight" in state_dict:
        blocks = {int(k.split(".")[4]) for k in state_dict if k.startswith(f"swin.stages.{stage}.blocks.")}
        depths.append(len(blocks))
        table = state_dict[f"swin.stages.{stage}.blocks.0.attention.relative_position_bias_table"]  # ((2M-1)^2, h)
        num_heads.append(table.shape[1])
        windows.append((math.isqrt(table.shape[0]) + 1) // 2)
        stage += 1
    mlp_ratio = _mlp_ratio(state_dict, projection.shape[0], stage)
    labels = {}
    if "classifier.weight" in state_dict:
        num_labels = state_dict["classifier.weight"].shape[0]
        if id2label is not None:
            if sorted(id2label) != list(range(num_labels)):
                raise ValueError(
                    f"id2label names classes {_some(sorted(id2label))}, but the checkpoint's head has {num_labels} "
                    f"classes (0..{num_labels - 1})."
                )
            labels = label_config([id2label[i] for i in range(num_labels)])
        elif num_labels == len(IMAGENET_1K_WORDNET_IDS):
            labels = label_config(IMAGENET_1K_WORDNET_IDS)
        else:
            labels = {"num_labels": num_labels}
    elif id2label is not None:
        raise ValueError(
            f"id2label names {len(id2label)} classes, but the checkpoint has no classification head (no "
            f"classifier.weight): it converts to a base model, which has no classes."
        )
    return SwinTinyConfig(
        image_size=image_size,
        patch_size=projection.shape[-1],
        num_channels=projection.shape[1],
        embed_dim=projection.shape[0],
        depths=depths,
        num_heads=num_heads,
        window_size=windows,
        mlp_ratio=mlp_ratio,
        qkv_bias="swin.stages.0.blocks.0.attention.qkv.bias" in state_dict,
        patch_norm="swin.embeddings.norm.weight" in state_dict,
        **labels,
        **settings,
    )


def model_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    image_size: int = 224,
    id2label: dict[int, str] | None = None,
    source_config: dict | None = None,
) -> SwinTinyForImageClassification | SwinTinyModel:
    """The model a converted state dict describes, with its weights (all of them, strictly): a
    SwinTinyForImageClassification, or a SwinTinyModel (base model) when the checkpoint has no head.
    `source_config`: the checkpoint's own config.json, if any (see `config_from_state_dict`)."""
    config = config_from_state_dict(state_dict, image_size=image_size, id2label=id2label, source_config=source_config)
    if "classifier.weight" in state_dict:
        model = SwinTinyForImageClassification(config)
    else:
        model = SwinTinyModel(config)
        state_dict = {k.removeprefix("swin."): v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def timm_swin_kwargs(config: SwinTinyConfig) -> dict:
    """Keyword arguments of timm's `SwinTransformer` for the same architecture as `config`: a model built with
    them converts onto ours (`convert_state_dict(..., "timm")`). timm always has the patch-embedding norm."""
    return dict(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.num_channels,
        embed_dim=config.embed_dim,
        depths=tuple(config.depths),
        num_heads=tuple(config.num_heads),
        window_size=tuple(config.window_size),
        mlp_ratio=config.mlp_ratio,
        qkv_bias=config.qkv_bias,
        drop_path_rate=config.drop_path_rate,
        num_classes=config.num_labels,
    )


def checkpoint_file(path: str | Path) -> Path:
    """The weights file `path` names: the file itself, or in a folder (a transformers or timm hub download)
    one of CHECKPOINT_FILES."""
    path = Path(path)
    if path.is_dir():
        for name in CHECKPOINT_FILES:
            if (path / name).is_file():
                return path / name
        raise ValueError(
            f"checkpoint folder {str(path)!r} has none of {', '.join(CHECKPOINT_FILES)}; it holds "
            f"{_some(sorted(p.name for p in path.iterdir()))}. Pass the weights file itself."
        )
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is not a file or a folder.")
    return path


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file, or a torch pickle (weights only) possibly wrapped in {'state_dict'|'model': ...}.
    `path` may also be a folder holding one of CHECKPOINT_FILES."""
    path = checkpoint_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return unwrap_checkpoint(torch.load(path, map_location="cpu", weights_only=True))


def json_beside(path: str | Path, name: str) -> tuple[dict | None, Path | None]:
    """The JSON file `name` next to a checkpoint (or in its folder) and its path; (None, None) where there is none."""
    json_path = checkpoint_file(path).parent / name
    if not json_path.is_file():
        return None, None
    return json.loads(json_path.read_text()), json_path


def label_names_beside(path: str | Path) -> tuple[dict[int, str] | None, Path | None]:
    """Class names from the config.json next to a checkpoint (or in its folder), and that file; (None, None)
    where there is none or it names no classes."""
    config, config_path = json_beside(path, "config.json")
    names = label_names_from_config(config) if config else None
    return names, (config_path if names else None)


def image_size_from_config(config: dict | None) -> int | None:
    """The input side a checkpoint's config.json gives: transformers' `image_size`, timm's
    `pretrained_cfg.input_size[-1]` or `img_size` (top level or in `model_args`); None if it gives none."""
    if not config:
        return None
    pretrained_cfg = config.get("pretrained_cfg") or {}
    for size in (
        config.get("image_size"),
        pretrained_cfg.get("input_size"),
        config.get("img_size"),
        (config.get("model_args") or {}).get("img_size"),
    ):
        if size:
            return int(size[-1] if isinstance(size, (list, tuple)) else size)
    return None


PIL_RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}  # timm's names
_PROCESSOR_SETTINGS = ("resample", "image_mean", "image_std", "do_rescale", "rescale_factor", "do_normalize")


def processor_settings_beside(path: str | Path) -> tuple[dict, Path | None]:
    """The preprocessing the checkpoint was published with, as SwinTinyImageProcessor settings, and the file it
    was read from; ({}, None) where none lies beside it.

    A preprocessor_config.json (transformers) gives `resample`, `image_mean`, `image_std` and the rescale and
    normalise settings; else a timm config.json's `pretrained_cfg` gives `interpolation` (as `resample`), `mean`
    and `std`. The size is not taken: the processor resizes to the converted model's image_size."""
    processor, processor_path = json_beside(path, "preprocessor_config.json")
    if processor:
        return {k: processor[k] for k in _PROCESSOR_SETTINGS if k in processor}, processor_path
    config, config_path = json_beside(path, "config.json")
    pretrained_cfg = (config or {}).get("pretrained_cfg")
    if not pretrained_cfg:
        return {}, None
    settings = {}
    if "interpolation" in pretrained_cfg:
        interpolation = pretrained_cfg["interpolation"]
        if interpolation not in PIL_RESAMPLE:
            raise ValueError(
                f"{config_path}: pretrained_cfg.interpolation is {interpolation!r}; expected one of "
                f"{', '.join(PIL_RESAMPLE)}."
            )
        settings["resample"] = PIL_RESAMPLE[interpolation]
    if "mean" in pretrained_cfg:
        settings["image_mean"] = list(pretrained_cfg["mean"])
    if "std" in pretrained_cfg:
        settings["image_std"] = list(pretrained_cfg["std"])
    return settings, (config_path if settings else None)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", choices=SOURCES, default="auto", help="the checkpoint's layout (default: detect it from the keys)"
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="Swin weights (.safetensors, .pth, .bin), or a folder holding model.safetensors or pytorch_model.bin; "
        "class names are read from a config.json beside them",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--image_size",
        type=int,
        default=None,
        help="input side of the converted model (default: the one in the config.json beside the checkpoint, else 224)",
    )
    return parser


def _image_size(flag: int | None, from_source: int | None, source_path: Path | None) -> int:
    """--image_size if given (warning where the checkpoint's config says otherwise), else the config's, else 224."""
    if flag is None:
        return from_source or 224
    if from_source is not None and flag != from_source:
        warnings.warn(
            f"--image_size {flag}, but the checkpoint's config ({source_path}) says {from_source}: the converted "
            f"model and processor take {flag}.",
            stacklevel=3,
        )
    return flag


def main(argv: list[str] | None = None) -> SwinTinyForImageClassification | SwinTinyModel:
    args = get_args_parser().parse_args(argv)
    state_dict = load_checkpoint(args.checkpoint)
    layout = detect_layout(state_dict) if args.source == "auto" else args.source
    state_dict = convert_state_dict(state_dict, args.source)
    id2label, names_from = label_names_beside(args.checkpoint) if "classifier.weight" in state_dict else (None, None)
    source_config, source_config_path = json_beside(args.checkpoint, "config.json")
    image_size = _image_size(args.image_size, image_size_from_config(source_config), source_config_path)
    try:
        model = model_from_state_dict(
            state_dict, image_size=image_size, id2label=id2label, source_config=source_config
        )
    except ValueError as error:
        if names_from:
            error.add_note(f"the class names were read from {names_from}")
        elif source_config_path:
            error.add_note(f"the checkpoint's config is {source_config_path}")
        raise
    model.save_pretrained(args.output_dir)
    processor_settings, processor_from = processor_settings_beside(args.checkpoint)
    processor = make_image_processor(image_size, IMAGENET_MEAN, IMAGENET_STD)
    processor = SwinTinyImageProcessor(**{**processor.to_dict(), **processor_settings})
    processor.save_pretrained(args.output_dir)
    if processor_from:
        taken = ", ".join(f"{k}={v}" for k, v in processor_settings.items())
        print(f"image processor: {taken} (from {processor_from}), resized to {image_size}x{image_size}")
    else:
        print("image processor: bilinear, ImageNet mean and std (no preprocessing beside the checkpoint)")
    config = model.config
    if isinstance(model, SwinTinyModel):
        head = "no classification head: a base model (SwinTinyModel)"
    else:
        origin = f"named in {names_from}" if names_from else "ImageNet-1k's" if config.wordnet_ids else "unnamed"
        head = f"{config.num_labels} labels ({origin})"
    print(
        f"wrote {args.output_dir} from the {layout} layout: {sum(p.numel() for p in model.parameters()):,} "
        f"parameters, {config.depths} depths, {config.num_heads} heads, window {config.window_size}, {head}"
    )
    return model


if __name__ == "__main__":
    main()
