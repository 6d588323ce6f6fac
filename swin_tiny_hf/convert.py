"""Convert published Swin checkpoints (timm, transformers) to swin_tiny_hf's state-dict layout.

Our layout (SwinTinyForImageClassification):

    swin.embeddings.projection / swin.embeddings.norm
    swin.stages.{i}.blocks.{j}.{norm1, attention.qkv, attention.proj, attention.relative_position_bias_table,
                                norm2, mlp.fc1, mlp.fc2}
    swin.stages.{i}.downsample.{norm, reduction}         (end of stages 0 .. n-2)
    swin.norm, classifier

Sources:
- "timm": `timm.models.swin_transformer.SwinTransformer` (e.g. swin_tiny_patch4_window7_224): fused
  `attn.qkv`, downsample at the *start* of stages 1..n-1 (`layers.{i}.downsample`), `head.fc`.
- "transformers": `SwinForImageClassification`, with the v5 in-memory names (`attention.q_proj`,
  `layernorm_before`, ...) or the names its checkpoints are saved with (`attention.self.query`,
  `intermediate.dense`, ...). Separate q/k/v are concatenated into one qkv projection.

Derived buffers that some checkpoints carry (`relative_position_index`, `attn_mask`) are checked
against our own geometry and then dropped. Every other source key must be used exactly once.

CLI::

    python -m swin_tiny_hf.convert --source timm --checkpoint swin_tiny.safetensors --output_dir swin-t-imagenet
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from .configuration_swin_tiny import SwinTinyConfig
from .image_processing import IMAGENET_MEAN, IMAGENET_STD, make_image_processor
from .imagenet_classes import IMAGENET_1K_WORDNET_IDS, label_config
from .modeling_swin_tiny import SwinTinyForImageClassification
from .windows import relative_position_index

SOURCES = ("timm", "transformers")

_BLOCK_PARTS = {
    # timm
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

_PATTERNS = {
    "timm": {
        "block": re.compile(
            r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$|"
            r"^layers\.(\d+)\.blocks\.(\d+)\.(attn\.relative_position_bias_table)()$"
        ),
        "downsample": re.compile(r"^layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$"),
        "fixed": {
            "patch_embed.proj": "swin.embeddings.projection",
            "patch_embed.norm": "swin.embeddings.norm",
            "norm": "swin.norm",
            "head.fc": "classifier",
        },
        "downsample_offset": -1,  # timm's stage i starts with the merging that ends our stage i-1
    },
    "transformers": {
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


def _check_derived(key: str, tensor: torch.Tensor) -> None:
    """A stored relative index must equal ours; a stored shift mask is rebuilt by the model anyway."""
    if key.endswith("relative_position_index"):
        window = math.isqrt(math.isqrt(tensor.numel()))  # the index holds (M*M)^2 entries
        expected = relative_position_index(window)
        if tensor.numel() != expected.numel() or not torch.equal(tensor.reshape(expected.shape).long(), expected):
            raise ValueError(f"{key} does not match the relative position index of a {window}x{window} window.")


def convert_state_dict(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Map a timm or transformers Swin state dict onto SwinTinyForImageClassification's names.

    Raises ValueError for an unknown source or if any source key is left unused (naming them).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    rules = _PATTERNS[source]
    converted: dict[str, torch.Tensor] = {}
    qkv: dict[str, list[torch.Tensor | None]] = {}
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
        unused.append(key)

    for name, parts in qkv.items():
        if any(p is None for p in parts):
            missing = [("query", "key", "value")[i] for i, p in enumerate(parts) if p is None]
            raise ValueError(f"{name}: the source has no {', '.join(missing)} projection for this block.")
        converted[name] = torch.cat(parts, dim=0)  # (3C, C) or (3C,): q, k, v stacked as in a fused qkv
    if unused:
        raise ValueError(f"{len(unused)} {source} keys were not used by the conversion: {unused}")
    return converted


def config_from_state_dict(state_dict: dict[str, torch.Tensor], image_size: int = 224) -> SwinTinyConfig:
    """Read the architecture off a converted state dict (sizes from weight shapes).

    A 1,000-class head is ImageNet-1k's: its labels get the classes' names ("goldfish") and WordNet ids."""
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
    num_labels = state_dict["classifier.weight"].shape[0]
    labels = {"num_labels": num_labels}
    if num_labels == len(IMAGENET_1K_WORDNET_IDS):
        labels = label_config(IMAGENET_1K_WORDNET_IDS)
    return SwinTinyConfig(
        image_size=image_size,
        patch_size=projection.shape[-1],
        num_channels=projection.shape[1],
        embed_dim=projection.shape[0],
        depths=depths,
        num_heads=num_heads,
        window_size=windows,
        qkv_bias="swin.stages.0.blocks.0.attention.qkv.bias" in state_dict,
        patch_norm="swin.embeddings.norm.weight" in state_dict,
        **labels,
    )


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


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a .safetensors file, or a torch pickle (weights only) possibly wrapped in {'state_dict'|'model': ...}."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} is not a file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "state_dict_ema"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            return checkpoint[wrapper]
    return checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=SOURCES, required=True)
    parser.add_argument("--checkpoint", required=True, help="timm or transformers weights (.safetensors, .pth, .bin)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--image_size", type=int, default=224)
    return parser


def main(argv: list[str] | None = None) -> SwinTinyForImageClassification:
    args = get_args_parser().parse_args(argv)
    state_dict = convert_state_dict(load_checkpoint(args.checkpoint), args.source)
    config = config_from_state_dict(state_dict, image_size=args.image_size)
    model = SwinTinyForImageClassification(config)
    model.load_state_dict(state_dict, strict=True)
    model.save_pretrained(args.output_dir)
    make_image_processor(args.image_size, IMAGENET_MEAN, IMAGENET_STD).save_pretrained(args.output_dir)
    print(
        f"wrote {args.output_dir}: {sum(p.numel() for p in model.parameters()):,} parameters, config {config.depths} "
        f"depths, {config.num_heads} heads, window {config.window_size}, {config.num_labels} labels"
    )
    return model


if __name__ == "__main__":
    main()
