"""Shared fixtures: a tiny config (the transformers "model tester" pattern) so most tests run in milliseconds."""

import os
import subprocess
import sys

import pytest
import torch

from swin_tiny_hf import SwinTinyConfig

# How the suite runs (xdist workers' threads, slow tests first, notes of long tests): pytest's hooks from there
from suite_runner import pytest_collection_modifyitems, pytest_configure  # noqa: F401


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


def perturbed(model, scale: float = 0.02):
    """Random values added to every parameter, in eval mode: LayerNorms (1, 0) and bias tables (near 0) start
    trivial and would hide a mistake in the weights they touch."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return model.eval()


def run_without_the_package(script: str, tmp_path) -> str:
    """Run `script` in a fresh interpreter where `import swin_tiny_hf` fails (remote code only); return stdout."""
    guard = 'import sys\nsys.modules["swin_tiny_hf"] = None  # any import of the package now raises ImportError\n'
    result = subprocess.run(
        [sys.executable, "-c", guard + script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            "HF_HUB_OFFLINE": "1",
            "HF_MODULES_CACHE": str(tmp_path / "modules"),
            "PATH": "/usr/bin:/bin",
            **{k: v for k, v in os.environ.items() if k == "OMP_NUM_THREADS"},  # a pytest-xdist worker's share
        },
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
