"""train.py end to end, on CPU: tiny models on small real data, each run in a subprocess like a user's."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from swin_tiny_hf.training.synthetic_dataset import write_hub_layout

from datasets_for_tests import WORDNET_IDS, tiny_imagenet_like

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY_MODEL = [
    *"--image_size 32 --patch_size 2 --embed_dim 16 --depths 2 2 --num_heads 1 2 --window_size 4".split(),
    *"--drop_path_rate 0.1".split(),
]
# 320 digits, batch 16: 20 optimizer steps an epoch; mixing on from epoch 0 so it is exercised.
RESUME_RUN = [
    *"--dataset_name digits --max_train_samples 320 --max_eval_samples 40 --per_device_train_batch_size 16".split(),
    *"--num_train_epochs 2 --warmup_epochs 0.5 --learning_rate 1e-3 --mix_off_first_epochs 0".split(),
    *"--mix_off_last_epochs 0 --mixup_prob 0.5 --cutmix_prob 0.5 --checkpointing_steps 4".split(),
    *"--dataloader_num_workers 1 --seed 5".split(),
    *TINY_MODEL,
]
# A small run on a few digits: one epoch of two steps.
SHORT_RUN = [
    *"--dataset_name digits --max_train_samples 32 --max_eval_samples 16 --per_device_train_batch_size 16".split(),
    *"--num_train_epochs 1 --warmup_epochs 0".split(),
]
# A Tiny ImageNet-shaped model at 64 px (patch 4, one block a stage), two epochs of two steps.
TIN_RUN = [
    *"--image_size 64 --patch_size 4 --embed_dim 16 --depths 1 1 --num_heads 1 2 --window_size 8".split(),
    *"--per_device_train_batch_size 8 --num_train_epochs 2 --warmup_epochs 1 --mix_off_first_epochs 0".split(),
    *"--mix_off_last_epochs 0 --dataloader_num_workers 2".split(),
]
TIMING = ("images_per_second", "epoch_seconds", "data_seconds", "eval_seconds")


def train(*flags, launcher=(sys.executable,), check=True, env=None):
    result = subprocess.run(
        [*launcher, str(ROOT / "train.py"), *flags],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def history_without_timing(folder):
    return [
        {k: v for k, v in row.items() if k not in TIMING} for row in json.loads((folder / "history.json").read_text())
    ]


def assert_same_weights(a, b):
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    train(*RESUME_RUN, "--output_dir", str(folder))
    return folder


def test_run_writes_every_output(uninterrupted):
    names = {p.name for p in uninterrupted.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "modeling_swin_tiny.py",
        "README.md",
        "history.json",
        "all_results.json",
        "training_curves.png",
        "best",
    } <= names
    assert {f"step_{n}" for n in range(4, 41, 4)} <= names
    assert not [n for n in names if n.startswith(".tmp")]
    history = json.loads((uninterrupted / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2] and history[-1]["step"] == 40
    assert set(history[0]) == {
        "epoch",
        "step",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_top1",
        "val_top5",
        "lr",
        *TIMING,
    }
    results = json.loads((uninterrupted / "all_results.json").read_text())
    assert results["eval_samples"] == 40 and results["epoch"] == 2
    assert results["eval_accuracy"] == history[-1]["val_top1"] and "train_runtime" in results
    assert results["eval_top5_accuracy"] >= results["eval_accuracy"]
    checkpoint = uninterrupted / "step_8"
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "training_state.json", "args.json"} <= {
        p.name for p in checkpoint.iterdir()
    }
    saved_args = json.loads((checkpoint / "args.json").read_text())
    assert saved_args["learning_rate"] == 1e-3 and saved_args["model_config"]["embed_dim"] == 16


def test_best_model_folder_and_model_card(uninterrupted):
    best = uninterrupted / "best"
    card = ModelCard.load(best / "README.md")
    assert card.data.library_name == "transformers" and card.data.datasets == ["digits"]
    history = json.loads((uninterrupted / "history.json").read_text())
    top1 = max(row["val_top1"] for row in history)
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["accuracy"] == pytest.approx(top1, abs=1e-4)
    assert "Training recipe" in card.text and "| mixup_alpha | 0.4 |" in card.text
    assert "hub_token" not in card.text
    from transformers import AutoModelForImageClassification, pipeline

    model = AutoModelForImageClassification.from_pretrained(best, trust_remote_code=True)
    assert model.config.id2label[3] == "3"
    from PIL import Image

    predictions = pipeline("image-classification", model=str(best), trust_remote_code=True)(Image.new("RGB", (8, 8)))
    assert {p["label"] for p in predictions} <= {str(d) for d in range(10)}


def test_resume_from_step_k_ends_with_the_same_weights_and_history(uninterrupted, tmp_path):
    train(*RESUME_RUN, "--output_dir", str(tmp_path), "--resume_from_checkpoint", str(uninterrupted / "step_12"))
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)


def test_resume_from_the_last_step_still_evaluates_the_last_epoch(uninterrupted, tmp_path):
    # step_40 is written after the last optimizer step but before that epoch's evaluation.
    train(*RESUME_RUN, "--output_dir", str(tmp_path), "--resume_from_checkpoint", str(uninterrupted / "step_40"))
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)
    resumed, original = (json.loads((f / "all_results.json").read_text()) for f in (tmp_path, uninterrupted))
    for key in ("eval_accuracy", "eval_top5_accuracy", "eval_loss", "eval_samples", "epoch", "best_eval_accuracy"):
        assert resumed[key] == original[key], key


def test_resume_after_sigkill_ends_with_the_same_weights_and_history(uninterrupted, tmp_path):
    """Killed mid-run, with --checkpoints_total_limit 2 pruning as it goes; resumed from the newest checkpoint."""
    limit = ["--checkpoints_total_limit", "2"]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *RESUME_RUN, *limit, "--output_dir", str(tmp_path)],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (tmp_path / "step_8" / "training_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (tmp_path / "model.safetensors").exists()  # it really died mid-run
    assert len([p for p in tmp_path.glob("step_*") if (p / "training_state.json").exists()]) <= 2
    train(*RESUME_RUN, *limit, "--output_dir", str(tmp_path), "--resume_from_checkpoint", "latest")
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)
    # ten checkpoints were written over the run; the newest two are kept, and nothing hidden is left behind
    assert sorted(p.name for p in tmp_path.glob("*_*") if p.name.startswith(("step_", "epoch_"))) == [
        "step_36",
        "step_40",
    ]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_eval_only_reproduces_the_final_validation_scores(uninterrupted, tmp_path):
    train(
        "--dataset_name",
        "digits",
        "--max_eval_samples",
        "40",
        "--eval_only",
        "--model_name_or_path",
        str(uninterrupted),
        "--output_dir",
        str(tmp_path),
        "--dataloader_num_workers",
        "0",
    )
    results = json.loads((tmp_path / "all_results.json").read_text())
    final = json.loads((uninterrupted / "all_results.json").read_text())
    assert results["eval_accuracy"] == final["eval_accuracy"] and results["eval_samples"] == 40
    assert results["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)


def test_two_cpu_processes_count_every_validation_sample_once(uninterrupted, tmp_path):
    # 37 samples over 2 processes in batches of 8: accelerate pads the last batches, gather_for_metrics drops them.
    # `accelerate launch --cpu` starts one process whatever --num_processes says; two processes on CPUs are
    # accelerate's multi-process launcher (torchrun) with the CPU forced: DDP over gloo.
    launcher = (
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *"--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no".split(),
    )
    train(
        *"--dataset_name digits --max_train_samples 64 --max_eval_samples 37 --per_device_train_batch_size 8".split(),
        *"--per_device_eval_batch_size 8 --num_train_epochs 1 --warmup_epochs 0 --dataloader_num_workers 0".split(),
        *TINY_MODEL,
        "--output_dir",
        str(tmp_path / "ddp"),
        launcher=launcher,
        env={"ACCELERATE_USE_CPU": "true"},
    )
    results = json.loads((tmp_path / "ddp" / "all_results.json").read_text())
    assert results["eval_samples"] == 37
    # the learning rate follows the global batch: 8 per device x 2 processes = 16, so 2.5e-4 x 16 / 64
    card = (tmp_path / "ddp" / "README.md").read_text()
    assert "| global_batch_size | 16 |" in card and "| learning_rate | 6.25e-05 |" in card
    # the same checkpoint scored by one process gives the same numbers
    train(
        "--dataset_name",
        "digits",
        "--max_eval_samples",
        "37",
        "--eval_only",
        "--model_name_or_path",
        str(tmp_path / "ddp"),
        "--output_dir",
        str(tmp_path / "single"),
        "--dataloader_num_workers",
        "0",
    )
    single = json.loads((tmp_path / "single" / "all_results.json").read_text())
    assert single["eval_samples"] == 37
    assert single["eval_accuracy"] == results["eval_accuracy"]
    assert single["eval_top5_accuracy"] == results["eval_top5_accuracy"]


def test_tiny_imagenet_shaped_dataset_runs_end_to_end(tmp_path):
    """The Hub repository's layout (parquet shards, split "valid", WordNet ids) through load_dataset."""
    write_hub_layout(tiny_imagenet_like(train_per_class=8, valid_per_class=4), tmp_path / "tin", {"train": 2})
    train(
        "--dataset_name",
        str(tmp_path / "tin"),
        *TIN_RUN,
        "--checkpointing_steps",
        "epoch",
        "--output_dir",
        str(tmp_path / "out"),
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    # readable class names; the WordNet ids stay in the config
    assert [config["id2label"][str(i)] for i in range(4)] == [
        "goldfish",
        "European fire salamander",
        "bullfrog",
        "tailed frog",
    ]
    assert config["wordnet_ids"] == WORDNET_IDS and config["image_size"] == 64
    from PIL import Image
    from transformers import pipeline

    predictions = pipeline("image-classification", model=str(tmp_path / "out"))(Image.new("RGB", (64, 64)))
    assert {p["label"] for p in predictions} <= set(config["label2id"])
    assert (tmp_path / "out" / "epoch_2" / "training_state.json").exists()
    original = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert original["eval_samples"] == 16
    # resuming from the checkpoint of the last epoch has nothing left to train: it evaluates once and finishes
    train(
        "--dataset_name",
        str(tmp_path / "tin"),
        *TIN_RUN,
        "--output_dir",
        str(tmp_path / "again"),
        "--resume_from_checkpoint",
        str(tmp_path / "out" / "epoch_2"),
    )
    again = json.loads((tmp_path / "again" / "all_results.json").read_text())
    assert (again["eval_accuracy"], again["eval_samples"], again["epoch"]) == (
        original["eval_accuracy"],
        16,
        original["epoch"],
    )
    assert again["eval_loss"] == pytest.approx(original["eval_loss"], rel=1e-6)


def test_a_misspelt_or_abbreviated_flag_is_an_error(tmp_path, capsys):
    """As a user runs it (one subprocess), then in this process, where the parser and main are the same code."""
    result = train("--dataset_name", "digits", "--learning_rat", "1e-3", "--output_dir", str(tmp_path), check=False)
    assert result.returncode == 2 and "unrecognized arguments: --learning_rat" in result.stderr
    import train as script

    for flags, message in (
        (["--learning", "1e-3"], "unrecognized arguments: --learning"),  # no abbreviations
        (["--eval_only"], "--eval_only needs --model_name_or_path"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be at least 1, got 0"),
        (["--lr_base", "-1"], "--lr_base must be positive, got -1.0"),
        (["--torch_compile", "fast"], "argument --torch_compile: invalid choice: 'fast'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            script.parse_args(["--dataset_name", "digits", *flags, "--output_dir", str(tmp_path)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, flags
    assert script.parse_args(["--torch_compile", "--output_dir", "x"]).torch_compile == "default"
    assert script.parse_args(["--torch_compile", "max-autotune", "--output_dir", "x"]).torch_compile == "max-autotune"
    with pytest.raises(SystemExit):  # the model's sizes are checked before any data is loaded
        script.parse_args(["--dataset_name", "digits", "--window_size", "3", "--output_dir", str(tmp_path)])
    assert "window_size[0]=3 does not divide the stage resolution 16" in capsys.readouterr().err
    lower = script.parse_args(["--min_learning_rate", "0.01", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="--min_learning_rate 0.01 is above the peak learning rate 0.00025"):
        script.resolve_learning_rate(lower, num_processes=1)


def test_fine_tune_a_converted_timm_checkpoint_with_a_new_head(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    reference = timm.models.swin_transformer.SwinTransformer(
        img_size=32, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=1000
    )
    save_file(reference.state_dict(), tmp_path / "timm.safetensors")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "swin_tiny_hf.convert",
            "--source",
            "timm",
            "--checkpoint",
            str(tmp_path / "timm.safetensors"),
            "--output_dir",
            str(tmp_path / "converted"),
            "--image_size",
            "32",
        ],
        check=True,
        env=ENV,
        cwd=ROOT,
        capture_output=True,
    )
    train(
        *SHORT_RUN,
        "--model_name_or_path",
        str(tmp_path / "converted"),
        "--ignore_mismatched_sizes",
        "--output_dir",
        str(tmp_path / "fine_tuned"),
    )
    config = json.loads((tmp_path / "fine_tuned" / "config.json").read_text())
    assert len(config["id2label"]) == 10 and config["image_size"] == 32
    weights = load_file(tmp_path / "fine_tuned" / "model.safetensors")
    assert weights["classifier.weight"].shape == (10, 32)  # embed 16 * 2 at the last stage


@pytest.mark.slow
def test_readme_quickstart_reaches_95_percent_on_digits(tmp_path):
    """The README's first command, as written: the default Swin-T through `accelerate launch`, offline."""
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/quickstart.sh" in readme and "bash scripts/test.sh" in readme
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "quickstart.sh"), "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "all_results.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["embed_dim"] == 96 and config["depths"] == [2, 2, 6, 2]  # the default Swin-T
    assert results["eval_samples"] == 360
    assert results["best_eval_accuracy"] >= 0.95, results


def test_tracking_to_tensorboard_and_bf16_autocast_on_cpu(tmp_path):
    train(
        *SHORT_RUN,
        *TINY_MODEL,
        "--with_tracking",
        "--report_to",
        "tensorboard",
        "--mixed_precision",
        "bf16",
        "--output_dir",
        str(tmp_path),
    )
    assert list(tmp_path.rglob("events.out.tfevents.*"))
    assert "| mixed_precision | bf16 |" in (tmp_path / "best" / "README.md").read_text()
    history = json.loads((tmp_path / "history.json").read_text())
    assert all(math.isfinite(history[0][k]) for k in ("train_loss", "val_loss"))


def test_torch_compile_run_saves_plain_loadable_weights(tmp_path):
    """--torch_compile trains through inductor; the saved model has the plain names and loads everywhere."""
    train(*SHORT_RUN, *TINY_MODEL, "--torch_compile", "--output_dir", str(tmp_path))
    from swin_tiny_hf import SwinTinyForImageClassification

    weights = load_file(tmp_path / "model.safetensors")
    assert not any("_orig_mod" in name for name in weights)
    model = SwinTinyForImageClassification.from_pretrained(tmp_path)
    assert set(weights) == set(model.state_dict())
    history = json.loads((tmp_path / "history.json").read_text())
    assert math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["val_loss"])
