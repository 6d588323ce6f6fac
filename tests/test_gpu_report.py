"""benchmarks/gpu_report.py --smoke: the GPU report's own code, every section, on the CPU at tiny sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_smoke_run_writes_every_section(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_report.py"), "--output_dir", str(tmp_path), "--smoke"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["smoke"] and report["device"].startswith("CPU")
    # 1. the device against fp32 on the CPU: on a CPU the fp32 path is the reference itself
    by_precision = {row["precision"]: row for row in report["correctness"]}
    assert set(by_precision) == {"fp32", "bf16"} and all(row["passed"] for row in by_precision.values())
    assert by_precision["fp32"]["logits"] < 1e-5 < by_precision["bf16"]["logits"] < 5e-2
    # 2. both models, both precisions, eager and compiled
    rows = report["model"]
    assert {(r["model"], r["precision"], r["compiled"]) for r in rows} >= {
        ("swin_tiny_hf", "bf16", True),
        ("timm SwinTransformer (fused attn)", "fp32", False),
    }
    assert all("error" not in r and r["train_images_per_second"] > 0 for r in rows), rows
    # 3. the loader with each worker count
    assert [r["workers"] for r in report["data"]] == [0, 1] and all(r["images_per_second"] > 0 for r in report["data"])
    # 4. accelerate launch train.py on the generated dataset
    train = report["train"]
    assert "error" not in train, train.get("error")
    assert train["images_per_second"] > 0 and 0 <= train["data_wait_share"] <= 1
    assert train["eval_samples"] == 20 and train["projected_recipe_hours"] > 0
    markdown = (tmp_path / "report.md").read_text()
    for heading in ("## Correctness", "## Model throughput", "## Training data pipeline", "## `accelerate launch"):
        assert heading in markdown
