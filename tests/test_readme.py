"""The README's examples, run as written (STYLE rule 9): every python block in order, then the ONNX command."""

import re
import subprocess
import sys
from pathlib import Path

from swin_tiny_hf import SwinTinyForImageClassification
from swin_tiny_hf.export_onnx import onnx_max_difference

ROOT = Path(__file__).resolve().parent.parent


def readme_blocks(language: str) -> list[tuple[str, str]]:
    """(section heading, code) of every fenced block of `language`, in order."""
    blocks, section = [], ""
    for part in re.split(r"^(## .*)$", (ROOT / "README.md").read_text(), flags=re.M):
        if part.startswith("## "):
            section = part
            continue
        blocks += [(section, code) for code in re.findall(rf"```{language}\n(.*?)```", part, re.S)]
    return blocks


def test_python_examples_and_the_onnx_command_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python = [(section, code) for section, code in readme_blocks("python") if "Trainer" not in section]
    # test_trainer.py runs the Trainer example, on a local dataset in the Hub's layout
    assert [s for s, _ in python] == [
        "## Using the model",
        "## Backbone for detection and segmentation",
        "## LoRA with 🤗 PEFT",
    ]
    for section, code in python:
        namespace = {}
        exec(compile(code, f"README.md {section}", "exec"), namespace)
    assert namespace["merged"].__class__.__name__ == "SwinTinyForImageClassification"
    (command,) = [code for section, code in readme_blocks("bash") if section == "## Export to ONNX"]
    argv = command.split()
    assert argv[:3] == ["python", "-m", "swin_tiny_hf.export_onnx"]
    result = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = float(result.stdout.split("max |difference| ")[1].split()[0])
    assert reported <= 1e-4
    # the file holds the saved model: onnxruntime at batch 4 against PyTorch
    model = SwinTinyForImageClassification.from_pretrained(tmp_path / "my-swin")
    assert onnx_max_difference(model, tmp_path / "my-swin" / "model.onnx", batch=4) <= 1e-4
