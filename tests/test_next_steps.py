"""What a finished run tells its user (next_steps.py): commands that run as printed, from any directory."""

import os
import shlex
import sys

from swin_tiny_hf.training.next_steps import data_flags, next_steps, python_command


def test_python_is_named_by_its_path_unless_python_on_the_path_is_this_very_interpreter(tmp_path, monkeypatch):
    """A virtual environment's bin/python links to the interpreter it was made from, which lacks its packages:
    `python` on the PATH resolving to the same file is not enough."""
    base = os.path.realpath(sys.executable)
    (tmp_path / "python").symlink_to(base)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert python_command() == sys.executable  # not "python": that one would not find this package
    monkeypatch.setenv("PATH", f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    assert python_command() == "python"


def test_data_flags_differ_from_the_defaults_and_name_local_paths_absolutely(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "saved").mkdir()
    defaults = {"dataset_name": "zh-plus/tiny-imagenet", "validation_fraction": 0.1, "skip_bad_images": False}
    settings = {**defaults, "train_dir": "images/train", "max_eval_samples": 40, "skip_bad_images": True}
    assert data_flags(settings, defaults) == [
        "--train_dir",
        str(tmp_path / "images" / "train"),
        "--max_eval_samples",
        "40",
        "--skip_bad_images",
    ]
    assert data_flags({**defaults, "dataset_name": "saved"}, defaults) == ["--dataset_name", str(tmp_path / "saved")]
    assert data_flags({**defaults, "dataset_name": "user/data"}, defaults) == ["--dataset_name", "user/data"]


def test_the_message_names_the_folders_and_four_commands(tmp_path):
    message = next_steps(tmp_path / "run", ["--dataset_name", "digits"], has_best=True)
    lines = message.splitlines()
    assert lines[0].endswith(str(tmp_path / "run")) and lines[1].endswith(str(tmp_path / "run" / "best"))
    commands = {line.split(":", 1)[0].strip(): line.split(":", 1)[1] for line in lines[3:]}
    evaluate = shlex.split(commands["evaluate"])
    assert evaluate[2:5] == ["--eval_only", "--model_name_or_path", str(tmp_path / "run")]
    assert evaluate[-2:] == ["--output_dir", str(tmp_path / "run-eval")] and "digits" in evaluate
    assert shlex.split(commands["push"])[:4] == ["hf", "upload", "YOUR_NAME/run", str(tmp_path / "run" / "best")]
