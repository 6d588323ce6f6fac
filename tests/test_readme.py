"""The README's examples, run as written (STYLE rule 9): every python block in order, and every shell command of its
bash blocks the way a user runs it after the set-up, in a new shell with `.venv` activated, from the repository's
root."""

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification, save_model_and_processor
from swin_tiny_hf.export_onnx import main as export_main
from swin_tiny_hf.export_onnx import onnx_max_difference

ROOT = Path(__file__).resolve().parent.parent
ACTIVATE = "source .venv/bin/activate"


def readme_blocks(language: str) -> list[tuple[str, str]]:
    """(section heading, code) of every fenced block of `language`, in order."""
    blocks, section = [], ""
    for part in re.split(r"^(## .*)$", (ROOT / "README.md").read_text(), flags=re.M):
        if part.startswith("## "):
            section = part
            continue
        blocks += [(section, code) for code in re.findall(rf"```{language}\n(.*?)```", part, re.S)]
    return blocks


def readme_commands() -> list[str]:
    """Every command of the README's bash blocks, in order: continuation lines joined, comments dropped."""
    commands = []
    for _, code in readme_blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if command:
                commands.append(re.sub(r"\s+", " ", command))
    return commands


@pytest.mark.slow
def test_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    python = [(section, code) for section, code in readme_blocks("python") if "Trainer" not in section]
    # test_trainer.py runs the Trainer example, on a local dataset in the Hub's layout
    assert [s for s, _ in python] == [
        "## Using the model",
        "## Export to ONNX",
        "## Export to ONNX",
        "## Backbone for detection and segmentation",
        "## LoRA with 🤗 PEFT",
    ]
    for section, code in python:
        namespace = {}
        if "my-swin/model.onnx" in code:  # the serving example reads the file that its section's command writes
            command = "python -m swin_tiny_hf.export_onnx --model my-swin --output my-swin/model.onnx"
            assert section == "## Export to ONNX" and command in readme_commands()
            export_main(command.split()[3:])  # once: the section's second example (compile_frozen) reads no file
        exec(compile(code, f"README.md {section}", "exec"), namespace)
        if "compile_frozen(" in code:  # inductor's frozen graph answers as the eager model, both in bf16
            model, processor, images = namespace["model"], namespace["processor"], namespace["images"]
            assert namespace["logits"].dtype == torch.bfloat16
            with torch.no_grad():
                eager = model(**processor(images, return_tensors="pt")).logits
            torch.testing.assert_close(namespace["logits"], eager, atol=0.03, rtol=0.02)
    assert namespace["merged"].__class__.__name__ == "SwinTinyForImageClassification"
    assert (tmp_path / "my-swin" / "model.safetensors").is_file()


# Flags appended to the README's commands that train for hours (argparse keeps the last value of a repeated flag):
# a few digits (offline, bundled), two epochs, a small model; the README's own flags stay as printed.
TINY_DATA = (
    "--dataset_name digits --max_train_samples 16 --max_eval_samples 8 --per_device_train_batch_size 8 "
    "--per_device_eval_batch_size 8 --num_train_epochs 2"
)
TINY_MODEL = "--image_size 32 --patch_size 2 --embed_dim 16 --depths 2 2 --num_heads 1 2 --window_size 4"
# accelerate's notice when it had to assume launch values ("The following values were not passed ...")
ASSUMED = "had defaults used instead:"
# On a machine without a GPU, accelerate picks the threads per process itself and says so: its configuration has
# no setting for it (the README's notes on CPU runs say how to name it). Every other assumed value is what the
# configuration scripts/setup.sh writes must settle.
CPU_THREADS_NOTICE = "`--num_cpu_threads_per_process` was set to"


def user_shell_env() -> dict[str, str]:
    """The environment of a new shell: this test's, without the virtual environment that pytest runs in."""
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p.rstrip("/") != venv_bin)
    return {**env, "HF_HUB_OFFLINE": "1"}  # the test runs offline: the training commands get bundled data


def run_in_shell(command: str, root: Path) -> str:
    """`command` in `bash -c` after `source .venv/bin/activate`, from `root`; its exit status must be 0. Returns
    stdout and stderr together, checked for Python warnings (which a newcomer would have to learn to ignore)."""
    result = subprocess.run(
        ["bash", "-c", f"{ACTIVATE} && {command}"],
        cwd=root,
        env=user_shell_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{output[-4000:]}"
    warnings = re.findall(r"^.*\b[A-Z]\w*Warning: .*$", output, re.M)
    assert not warnings, f"{command} printed Python warnings:\n" + "\n".join(warnings)
    if command.startswith("accelerate launch"):
        notice = output.split(ASSUMED)[1].split("To avoid this warning")[0].strip() if ASSUMED in output else ""
        allowed = {CPU_THREADS_NOTICE} if not torch.cuda.is_available() else set()
        assert all(any(a in line for a in allowed) for line in notice.splitlines()), (
            f"{command}: accelerate assumed launch values that its configuration should hold:\n{notice}"
        )
    return output


def history_of(output_dir: Path) -> list[dict]:
    timing = ("seconds", "images_per_second")
    history = json.loads((output_dir / "history.json").read_text())
    return [{key: value for key, value in row.items() if not any(t in key for t in timing)} for row in history]


@pytest.fixture
def repository_root(tmp_path) -> Path:
    """A copy of the repository's root (links to its tracked files and to .venv) where the commands write what they
    write (outputs/, my-swin, ...) into the test's folder, not into the developer's."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in {path.split("/")[0] for path in tracked.splitlines()} | {".venv"}:
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


@pytest.mark.slow
def test_every_readme_command_runs_as_printed_in_the_activated_environment(repository_root):
    root = repository_root
    commands = readme_commands()
    # The set-up comes first, then the activation that every later command needs (this test runs each one after it).
    assert commands[:2] == ["bash scripts/setup.sh", ACTIVATE]
    handled = set(commands[:2])
    # `bash scripts/setup.sh` is not run again here: CI's first step is this command on a fresh clone (.ci/run).
    assert "bash scripts/setup.sh" in (ROOT / ".ci" / "run").read_text()

    def command(prefix: str, *flags: str, without: str = "") -> str:
        """The one README command (printed once or more) that starts with `prefix`, has `flags` and not `without`."""
        (found,) = {
            c
            for c in commands
            if c.startswith(prefix) and all(f in c.split() for f in flags) and without not in c.split()
        }
        handled.add(found)
        return found

    # Run by other tests and by CI: the quick start in full (test_train.py checks its accuracy), the suite in CI.
    assert "scripts/quickstart.sh" in (ROOT / "tests" / "test_train.py").read_text()
    command("bash scripts/quickstart.sh")
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    command("bash scripts/test.sh")

    recipe = command("accelerate launch -q train.py", "--checkpointing_steps", without="--resume_from_checkpoint")
    resume = command("accelerate launch -q train.py", "--resume_from_checkpoint")
    fine_tune = command("accelerate launch -q train.py", "--model_name_or_path")
    download = command("hf download")
    convert = command("python -m swin_tiny_hf.convert")
    export = command("python -m swin_tiny_hf.export_onnx")
    synthetic = command("python -m swin_tiny_hf.training.synthetic_dataset")
    help_command = command("python train.py --help")
    assert handled == set(commands), f"README commands this test does not run: {set(commands) - handled}"

    def train_then_resume():
        # the reference recipe, tiny: two epochs, a checkpoint each, tracked with TensorBoard
        output_dir = root / recipe.split("--output_dir ")[1].split()[0]
        run_in_shell(f"{recipe} {TINY_DATA} {TINY_MODEL}", root)
        args = json.loads((output_dir / "epoch_2" / "args.json").read_text())
        assert args["checkpoints_total_limit"] == 3 and args["with_tracking"] is True
        assert list(output_dir.rglob("events.out.tfevents.*")), "no TensorBoard log"
        uninterrupted = history_of(output_dir)
        assert [row["epoch"] for row in uninterrupted] == [1, 2]
        # a crash in epoch 2, before its checkpoint: the resume command goes on from epoch_1, exactly
        shutil.rmtree(output_dir / "epoch_2")
        log = run_in_shell(f"{resume} {TINY_DATA} {TINY_MODEL}", root)
        assert re.search(rf"resumed from \S*{output_dir.name}/epoch_1 at step 2 ", log), log[-3000:]
        assert (output_dir / "epoch_2").is_dir() and history_of(output_dir) == uninterrupted

    def convert_then_fine_tune():
        # `hf download` needs the network: its flags are checked, and a timm folder of the same layout is written
        # (model.safetensors and config.json of timm's swin_tiny_patch4_window7_224 at 224 px, a small trunk)
        hub_help = run_in_shell("hf download --help", root)
        repo, *files = download.split()[2 : download.split().index("--local-dir")]
        assert repo.startswith("timm/swin_tiny_patch4_window7_224") and files == ["model.safetensors", "config.json"]
        assert all(flag in hub_help for flag in re.findall(r"--[\w-]+", download))
        import timm
        from timm.models import save_for_hf

        small = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
        timm_model = timm.create_model("swin_tiny_patch4_window7_224", **small)
        save_for_hf(timm_model, root / download.split()[-1], safe_serialization=True)
        run_in_shell(convert, root)
        converted = root / convert.split("--output_dir ")[1].split()[0]
        config = json.loads((converted / "config.json").read_text())
        assert (config["image_size"], config["embed_dim"], len(config["id2label"])) == (224, 16, 1000)
        assert config["id2label"]["1"] == "goldfish"  # timm's unnamed ImageNet-1k head gets the class names
        run_in_shell(f"{fine_tune} {TINY_DATA}", root)  # the converted model's own sizes, at --image_size 224
        fine_tuned = root / fine_tune.split("--output_dir ")[1].split()[0]
        config = json.loads((fine_tuned / "config.json").read_text())
        assert (config["image_size"], config["embed_dim"], len(config["id2label"])) == (224, 16, 10)
        assert f"fine-tuned from `{converted.name}`" in (fine_tuned / "README.md").read_text()

    def the_quick_ones():
        help_text = run_in_shell(help_command, root)
        # every flag the README's training commands pass is one of train.py's
        train_flags = {flag for c in (recipe, resume, fine_tune) for flag in re.findall(r"--\w+", c)}
        assert help_text.startswith("usage: train.py") and {f for f in train_flags if f not in help_text} == set()
        run_in_shell(f"{synthetic} --train_per_class 2 --valid_per_class 1 --num_classes 4", root)
        from datasets import load_dataset

        dataset = load_dataset(str(root / synthetic.split("--output_dir ")[1].split()[0]))
        assert (dataset["train"].num_rows, dataset["valid"].num_rows) == (8, 4)
        assert all(re.fullmatch(r"n\d{8}", name) for name in dataset["train"].features["label"].names)
        # the export needs "my-swin", the classifier that the README's first python block saves (smaller here)
        model = SwinTinyForImageClassification(SwinTinyConfig(embed_dim=16, num_heads=[1, 1, 1, 1], num_labels=3))
        save_model_and_processor(model, root / "my-swin")
        log = run_in_shell(export, root)
        assert float(log.split("max |difference| ")[1].split()[0]) <= 1e-4
        onnx_file = root / export.split("--output ")[1].split()[0]
        assert onnx_max_difference(model.eval(), onnx_file, batch=4) <= 1e-4  # at another batch size

    # three independent chains at once: most of each command's time is a fresh interpreter's imports
    with ThreadPoolExecutor(3) as pool:
        for chain in [pool.submit(f) for f in (train_then_resume, convert_then_fine_tune, the_quick_ones)]:
            chain.result()
