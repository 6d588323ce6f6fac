"""What a finished run tells its user: where the model is, and the commands that go on from it.

Each command is printed so that it runs as printed, from any directory: absolute paths, and the Python that ran
the training when `python` on the PATH is another one (a virtual environment that is not activated).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def python_command() -> str:
    """`python` where that is the interpreter running now, else this interpreter's path. The paths are compared as
    they are, not resolved: a virtual environment's `bin/python` links to the interpreter it was made from, which
    does not see the environment's packages."""
    on_path = shutil.which("python")
    if on_path and os.path.abspath(on_path) == os.path.abspath(sys.executable):
        return "python"
    return sys.executable


def next_steps(output_dir: str | os.PathLike, dataset_flags: list[str], has_best: bool) -> str:
    """The end-of-run message: the final model's folder (and best/), then how to evaluate it, classify images
    with it, export it to ONNX and push it to the Hub. `dataset_flags`: the run's data flags, for the evaluation."""
    folder = Path(output_dir).resolve()
    python = python_command()
    train_script = str(Path(__file__).resolve().parents[2] / "train.py")
    best = folder / "best"
    evaluate = [python, train_script, "--eval_only", "--model_name_or_path", str(folder), *dataset_flags]
    evaluate += ["--output_dir", str(folder.with_name(folder.name + "-eval"))]
    predict = [python, "-m", "swin_tiny_hf.predict", "--model", str(folder)]
    export = [python, "-m", "swin_tiny_hf.export_onnx", "--model", str(folder), "--output", str(folder / "model.onnx")]
    push = ["hf", "upload", f"YOUR_NAME/{folder.name}", str(best if has_best else folder)]
    lines = [
        f"The final model (weights, config, image processor, model card) is in {folder}",
        *([f"The best epoch's model is in {best}"] if has_best else []),
        "Next:",
        f"  evaluate: {shlex.join(evaluate)}",
        f"  predict:  {shlex.join(predict)} IMAGE [IMAGE ...]",
        f"  export:   {shlex.join(export)}",
        f"  push:     {shlex.join(push)}  (or train with --push_to_hub --hub_model_id YOUR_NAME/MODEL)",
    ]
    return "\n".join(lines)


# The flags that say which data a run used: an evaluation of its model passes the same ones.
DATA_FLAGS = (
    "dataset_name",
    "dataset_config_name",
    "train_dir",
    "validation_dir",
    "image_column_name",
    "label_column_name",
    "validation_fraction",
    "validation_split_seed",
    "max_eval_samples",
    "cache_dir",
    "skip_bad_images",
)


# Of those, the ones that name a path: made absolute, so that the command runs from any directory.
PATH_FLAGS = ("dataset_name", "train_dir", "validation_dir", "cache_dir")


def data_flags(settings: dict, defaults: dict) -> list[str]:
    """The run's data flags that differ from their defaults, as command-line words; local paths made absolute (a
    --dataset_name that is no local folder is a Hub id, and stays as it is)."""
    words = []
    for name in DATA_FLAGS:
        value = settings.get(name)
        if value is None or value == defaults.get(name):
            continue
        if name in PATH_FLAGS and (name != "dataset_name" or os.path.exists(value)):
            value = os.path.abspath(value)
        words += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return words
