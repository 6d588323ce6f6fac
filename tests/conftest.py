"""Shared fixtures: a tiny config (the transformers "model tester" pattern) so most tests run in milliseconds."""

import pytest
import torch

from swin_tiny_hf import SwinTinyConfig


def tiny_config(**overrides) -> SwinTinyConfig:
    """32 px, patch 2: stages of 16, 8 and 4 tokens a side; windows of 4, so stages 0 and 1 shift and the
    last one (4 <= 4) is clipped and does not."""
    values = dict(
        image_size=32,
        patch_size=2,
        embed_dim=16,
        depths=[2, 2, 2],
        num_heads=[1, 2, 4],
        window_size=4,
        drop_path_rate=0.1,
    )
    values.update(overrides)
    if "id2label" not in values:
        values.setdefault("num_labels", 5)
    return SwinTinyConfig(**values)


@pytest.fixture
def config() -> SwinTinyConfig:
    return tiny_config()


@pytest.fixture
def pixel_values() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
