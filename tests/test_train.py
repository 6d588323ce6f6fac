"""train.py end to end, on CPU: tiny models on small real data. The runs go through `train.main(argv)` in this
process; signals, kills, two processes, the run lock and the command line itself run in subprocesses."""

import json
import math
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from train_runs import (
    ENV,
    RESUME_RUN,
    ROOT,
    SHORT_RUN,
    TIMING,
    TIN_RUN,
    TINY_MODEL,
    TWO_CPU_PROCESSES_ENV,
    TWO_PROCESSES,
    assert_same_weights,
    checkpoints,
    drive,
    fill_the_disk,
    history_without_timing,
    run_train,
    small_disk,  # noqa: F401 (a fixture)
    train_subprocess,
)

from swin_tiny_hf import SwinTinyForImageClassification
from swin_tiny_hf.training import loop as training_loop
from swin_tiny_hf.training.checkpointing import find_latest_checkpoint
from swin_tiny_hf.training.optimization import SettingsError
from swin_tiny_hf.training.synthetic_dataset import write_hub_layout

import train
from datasets_for_tests import WORDNET_IDS, tiny_imagenet_like


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    run_train(*RESUME_RUN, "--output_dir", folder)
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
        "skipped_images",
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
    run_train(*RESUME_RUN, "--output_dir", tmp_path, "--resume_from_checkpoint", uninterrupted / "step_12")
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)


def test_resume_from_the_last_step_still_evaluates_the_last_epoch(uninterrupted, tmp_path):
    # step_40 is written after the last optimizer step but before that epoch's evaluation.
    run_train(*RESUME_RUN, "--output_dir", tmp_path, "--resume_from_checkpoint", uninterrupted / "step_40")
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)
    resumed, original = (json.loads((f / "all_results.json").read_text()) for f in (tmp_path, uninterrupted))
    for key in ("eval_accuracy", "eval_top5_accuracy", "eval_loss", "eval_samples", "epoch", "best_eval_accuracy"):
        assert resumed[key] == original[key], key


def test_resume_after_sigkill_ends_with_the_same_weights_and_history(uninterrupted, tmp_path):
    """Killed mid-run (a subprocess: SIGKILL is the point), with --checkpoints_total_limit 2 pruning as it goes;
    resumed from the newest checkpoint."""
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
    run_train(*RESUME_RUN, *limit, "--output_dir", tmp_path, "--resume_from_checkpoint", "latest")
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)
    # ten checkpoints were written over the run; the newest two are kept, and nothing hidden is left behind
    assert sorted(p.name for p in tmp_path.glob("*_*") if p.name.startswith(("step_", "epoch_"))) == [
        "step_36",
        "step_40",
    ]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def evaluate_only(model_folder, output_dir, samples: int, precision: str = "auto") -> dict:
    """--eval_only on `samples` digits, in this process: the results it returns (and writes)."""
    return run_train(
        *f"--dataset_name digits --max_eval_samples {samples} --eval_only --dataloader_num_workers 0".split(),
        *("--mixed_precision", precision),
        *("--model_name_or_path", model_folder, "--output_dir", output_dir),
    ).results


def test_eval_only_reproduces_the_final_validation_scores(uninterrupted, tmp_path):
    returned = evaluate_only(uninterrupted, tmp_path, 40)
    results = json.loads((tmp_path / "all_results.json").read_text())
    final = json.loads((uninterrupted / "all_results.json").read_text())
    assert results == returned
    assert results["eval_accuracy"] == final["eval_accuracy"] and results["eval_samples"] == 40
    assert results["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)


# Two CPU processes, one run shared by the tests below (each launch costs two interpreters' imports): 96 digits in
# batches of 8 per process (6 steps an epoch), 37 validation samples (accelerate pads the last batches), fp32 for
# comparisons to 1e-5, a preemption check at every step.
TWO_PROCESS_FLAGS = [
    *"--dataset_name digits --max_train_samples 96 --max_eval_samples 37 --per_device_train_batch_size 8".split(),
    *"--per_device_eval_batch_size 8 --num_train_epochs 2 --warmup_epochs 0.5 --dataloader_num_workers 0".split(),
    *"--lr_base 1e-2 --mixed_precision no --seed 3 --logging_steps 3 --preemption_check_steps 1".split(),
    *TINY_MODEL,
]
TWO = dict(launcher=TWO_PROCESSES, env=TWO_CPU_PROCESSES_ENV)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """The uninterrupted two-process run of TWO_PROCESS_FLAGS: its output folder (read only by the tests)."""
    folder = tmp_path_factory.mktemp("two_processes") / "whole"
    train_subprocess(*TWO_PROCESS_FLAGS, "--output_dir", folder, **TWO)
    return folder


@pytest.mark.slow  # as the slow test that shares two_process_run: sorted apart, one process would make the run twice
def test_two_cpu_processes_count_every_validation_sample_once(two_process_run, tmp_path):
    """37 samples over 2 processes in batches of 8: accelerate pads the last batches, gather_for_metrics drops them.
    The two processes' scores are those of the saved model scored by one process; a model whose trunk did not
    load (initialised afresh) scores another loss, far outside the tolerance."""
    ddp = two_process_run
    results = json.loads((ddp / "all_results.json").read_text())
    assert results["eval_samples"] == 37
    # the learning rate follows the global batch: 8 per device x 2 processes = 16, so 1e-2 x 16 / 64
    card = (ddp / "README.md").read_text()
    assert "| global_batch_size | 16 |" in card and "| learning_rate | 0.0025 |" in card
    # the same model scored by one process gives the same numbers
    single = evaluate_only(ddp, tmp_path / "single", 37, precision="no")
    assert single["eval_samples"] == 37
    assert single["eval_accuracy"] == results["eval_accuracy"]
    assert single["eval_top5_accuracy"] == results["eval_top5_accuracy"]
    assert single["eval_loss"] == pytest.approx(results["eval_loss"], rel=1e-5)
    # which other weights would not give: the trained head on a trunk initialised afresh
    trained = SwinTinyForImageClassification.from_pretrained(ddp)
    torch.manual_seed(42)
    fresh = SwinTinyForImageClassification(trained.config)
    fresh.classifier.load_state_dict(trained.classifier.state_dict())
    shutil.copytree(ddp / "final", tmp_path / "fresh")
    fresh.save_pretrained(tmp_path / "fresh")
    other = evaluate_only(tmp_path / "fresh", tmp_path / "fresh_scored", 37, precision="no")
    assert abs(other["eval_loss"] - results["eval_loss"]) > 100 * 1e-5 * results["eval_loss"], (other, results)


def test_tiny_imagenet_shaped_dataset_runs_end_to_end(tmp_path):
    """The Hub repository's layout (parquet shards, split "valid", WordNet ids) through load_dataset."""
    write_hub_layout(tiny_imagenet_like(train_per_class=8, valid_per_class=4), tmp_path / "tin", {"train": 2})
    run_train(
        "--dataset_name",
        tmp_path / "tin",
        *TIN_RUN,
        "--checkpointing_steps",
        "epoch",
        "--output_dir",
        tmp_path / "out",
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

    classify = pipeline("image-classification", model=str(tmp_path / "out"), trust_remote_code=True)
    predictions = classify(Image.new("RGB", (64, 64)))
    assert {p["label"] for p in predictions} <= set(config["label2id"])
    assert (tmp_path / "out" / "epoch_2" / "training_state.json").exists()
    original = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert original["eval_samples"] == 16
    # resuming from the checkpoint of the last epoch has nothing left to train: it evaluates once and finishes
    run_train(
        *("--dataset_name", tmp_path / "tin", *TIN_RUN, "--output_dir", tmp_path / "again"),
        *("--resume_from_checkpoint", tmp_path / "out" / "epoch_2"),
    )
    again = json.loads((tmp_path / "again" / "all_results.json").read_text())
    assert (again["eval_accuracy"], again["eval_samples"], again["epoch"]) == (
        original["eval_accuracy"],
        16,
        original["epoch"],
    )
    assert again["eval_loss"] == pytest.approx(original["eval_loss"], rel=1e-6)


def test_a_misspelt_or_abbreviated_flag_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--dataset_name", "digits", "--learning_rat", "1e-3", "--output_dir", str(tmp_path)])
    assert exit_info.value.code == 2 and "unrecognized arguments: --learning_rat" in capsys.readouterr().err
    for flags, message in (
        (["--learning", "1e-3"], "unrecognized arguments: --learning"),  # no abbreviations
        (["--eval_only"], "--eval_only needs --model_name_or_path"),
        (
            ["--checkpoints_total_limit", "0"],
            "argument --checkpoints_total_limit: expected an integer of at least 1, got 0",
        ),
        (["--lr_base", "-1"], "argument --lr_base: expected a number in (0, inf), got -1"),
        (["--learning_rate", "inf"], "argument --learning_rate: expected a finite number, got 'inf'"),
        (["--warmup_epochs", "nan"], "argument --warmup_epochs: expected a finite number, got 'nan'"),
        (["--drop_path_rate", "nan"], "argument --drop_path_rate: expected a finite number, got 'nan'"),
        (["--adam_beta2", "1"], "argument --adam_beta2: expected a number in [0, 1), got 1"),
        (["--mixup_prob", "0.7", "--cutmix_prob", "0.5"], "--mixup_prob + --cutmix_prob must be at most 1"),
        (["--preemption_signals", "SIGKILL"], "'SIGKILL' is not a signal a process can handle"),
        (["--torch_compile", "fast"], "argument --torch_compile: invalid choice: 'fast'"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(["--dataset_name", "digits", *flags, "--output_dir", str(tmp_path)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err, flags
    assert train.parse_args(["--torch_compile", "--output_dir", "x"]).torch_compile == "default"
    assert train.parse_args(["--torch_compile", "max-autotune", "--output_dir", "x"]).torch_compile == "max-autotune"
    with pytest.raises(SystemExit):  # the model's sizes are checked before any data is loaded
        train.parse_args(["--dataset_name", "digits", "--window_size", "3", "--output_dir", str(tmp_path)])
    assert "window_size[0]=3 does not divide the stage resolution 16" in capsys.readouterr().err
    lower = train.parse_args(["--min_learning_rate", "0.01", "--output_dir", str(tmp_path)])
    with pytest.raises(SettingsError, match="--min_learning_rate 0.01 is above the peak learning rate 0.00025"):
        train.resolve_flags(lower, num_processes=1, device_type="cpu")


def test_fine_tune_a_converted_timm_checkpoint_with_a_new_head(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    reference = timm.models.swin_transformer.SwinTransformer(
        img_size=32, patch_size=2, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=1000
    )
    save_file(reference.state_dict(), tmp_path / "timm.safetensors")
    from swin_tiny_hf import convert

    convert.main(
        ["--source", "timm", "--checkpoint", str(tmp_path / "timm.safetensors"), "--image_size", "32"]
        + ["--output_dir", str(tmp_path / "converted")]
    )
    run_train(
        *SHORT_RUN,
        *("--model_name_or_path", tmp_path / "converted", "--ignore_mismatched_sizes"),
        *("--output_dir", tmp_path / "fine_tuned"),
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


@pytest.mark.slow
def test_torch_compile_run_saves_plain_loadable_weights(tmp_path):
    """--torch_compile trains through inductor; the saved model has the plain names and loads everywhere."""
    # one block a stage: inductor's first compilation (a fresh machine has no cache) takes half TINY_MODEL's time
    one_block_a_stage = [*TINY_MODEL, *"--depths 1 1".split()]
    try:
        run_train(*SHORT_RUN, *one_block_a_stage, "--torch_compile", "--output_dir", tmp_path)
    finally:
        torch._dynamo.reset()  # the compiled graphs are this run's, not the next test's
    weights = load_file(tmp_path / "model.safetensors")
    assert not any("_orig_mod" in name for name in weights)
    model = SwinTinyForImageClassification.from_pretrained(tmp_path)
    assert set(weights) == set(model.state_dict())
    history = json.loads((tmp_path / "history.json").read_text())
    assert math.isfinite(history[0]["train_loss"]) and math.isfinite(history[0]["val_loss"])


# ------------------------------------------------------------------------------ a long run's everyday faults


def test_sigterm_in_training_stops_at_a_step_with_a_checkpoint_and_resumes_exactly(uninterrupted, tmp_path):
    """The signal as a scheduler sends it, to train.py run as a user runs it; the resume in this process."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *RESUME_RUN, "--output_dir", str(tmp_path)],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while not (tmp_path / "step_4" / "training_state.json").exists():
        assert process.poll() is None and time.time() < deadline, "the run ended before the signal"
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    latest = find_latest_checkpoint(tmp_path).name
    assert f"SIGTERM received: stopped after a complete checkpoint, {tmp_path / latest}" in stderr
    assert "--resume_from_checkpoint latest" in stderr and not (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / latest / "training_state.json").read_text())["completed_steps"] > 4
    run_train(*RESUME_RUN, "--output_dir", tmp_path, "--resume_from_checkpoint", "latest")
    assert_same_weights(uninterrupted, tmp_path)
    assert history_without_timing(tmp_path) == history_without_timing(uninterrupted)


def test_sigterm_in_evaluation_checkpoints_the_trained_epoch_and_resumes_exactly(uninterrupted, tmp_path):
    patch = (
        "from swin_tiny_hf.training import loop\n"
        "evaluate = loop.evaluate_model\n"  # the evaluation of the epoch loop
        "def evaluate_after_a_signal(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # as the first evaluation starts\n"
        "    return evaluate(*args, **kwargs)\n"
        "loop.evaluate_model = evaluate_after_a_signal\n"
    )
    result = drive(tmp_path, patch, *RESUME_RUN, "--output_dir", tmp_path / "run")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    # epoch 1 (20 steps) trained, not evaluated: its last step's checkpoint, and no history yet
    state = json.loads((tmp_path / "run" / "step_20" / "training_state.json").read_text())
    assert (state["completed_steps"], state["epoch"], state["batches_into_epoch"], state["history"]) == (20, 0, 20, [])
    run_train(*RESUME_RUN, "--output_dir", tmp_path / "run", "--resume_from_checkpoint", "latest")
    assert_same_weights(uninterrupted, tmp_path / "run")
    assert history_without_timing(tmp_path / "run") == history_without_timing(uninterrupted)


@pytest.mark.slow
def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(two_process_run, tmp_path):
    """SIGUSR1 to rank 1 only, at its step 3: both processes agree (one step later: the agreement is an all-reduce
    started at one step and read at the next), write step_4, and stop; the resume is exact."""
    patch = (
        "from swin_tiny_hf.training import loop\n"
        "log = loop.TrainingLoop.log_progress\n"  # every --logging_steps steps
        "def log_then_signal(*args, **kwargs):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        os.kill(os.getpid(), signal.SIGUSR1)\n"
        "    return log(*args, **kwargs)\n"
        "loop.TrainingLoop.log_progress = log_then_signal\n"
    )
    result = drive(tmp_path, patch, *TWO_PROCESS_FLAGS, "--output_dir", tmp_path / "run", **TWO)
    assert result.returncode != 0 and "SIGUSR1 received" in result.stderr, result.stderr[-3000:]
    assert checkpoints(tmp_path / "run") == ["step_4"]
    assert len(list((tmp_path / "run" / "step_4").glob("random_states_*.pkl"))) == 2  # both processes' RNG
    train_subprocess(*TWO_PROCESS_FLAGS, "--output_dir", tmp_path / "run", "--resume_from_checkpoint", "latest", **TWO)
    assert_same_weights(two_process_run, tmp_path / "run")
    assert history_without_timing(two_process_run) == history_without_timing(tmp_path / "run")


def test_one_run_per_folder_and_a_killed_run_leaves_it_unlocked(tmp_path):
    """The first run in a subprocess (it is killed); the second and third in this process, another process."""
    folder = tmp_path / "run"
    log = tmp_path / "first.log"
    with log.open("w") as output:
        first = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *RESUME_RUN,
                "--num_train_epochs",
                "50",
                "--output_dir",
                str(folder),
            ],
            env=ENV,
            cwd=ROOT,
            stdout=output,
            stderr=output,
        )
    try:
        deadline = time.time() + 300
        while not (folder / "step_4").exists():
            assert first.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        second = run_train(
            *SHORT_RUN, *TINY_MODEL, "--output_dir", folder, "--resume_from_checkpoint", "latest", exit_code=1
        )
        assert f"--output_dir '{folder}' is in use by another run" in second.log
        assert f'"pid": {first.pid}' in second.log
    finally:
        first.kill()
        first.wait()
    assert (folder / ".run.lock").exists()  # SIGKILL: the file stays, the lock went with the process
    third = run_train(*SHORT_RUN, *TINY_MODEL, "--output_dir", folder, "--overwrite_output_dir")
    assert "deleted" in third.log and checkpoints(folder) == [] and (folder / "model.safetensors").exists()
    assert not (folder / ".run.lock").exists()  # a run that ends removes it


def test_a_folder_with_a_run_in_it_is_refused_untouched_unless_overwritten(tmp_path):
    """The refusal as a user meets it: train.py on the command line, its exit code and its message on stderr (the
    one run of this file that only the command line is the point of)."""
    run_train(*SHORT_RUN, *TINY_MODEL, "--checkpointing_steps", "1", "--output_dir", tmp_path)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = train_subprocess(*SHORT_RUN, *TINY_MODEL, "--output_dir", tmp_path, check=False)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert f"--output_dir '{tmp_path}' is not empty (README.md, all_results.json, best" in again.stderr
    assert "--resume_from_checkpoint latest" in again.stderr and "--overwrite_output_dir" in again.stderr
    assert {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    replaced = run_train(*SHORT_RUN, *TINY_MODEL, "--output_dir", tmp_path, "--overwrite_output_dir")
    assert "--overwrite_output_dir: deleted README.md, all_results.json, best" in replaced.log
    assert checkpoints(tmp_path) == [] and (tmp_path / "model.safetensors").exists()  # step_1 and step_2 went


def test_a_resume_with_changed_settings_is_refused_unless_accepted(uninterrupted, tmp_path):
    step_12 = uninterrupted / "step_12"
    changed = ["--per_device_train_batch_size", "32", "--learning_rate", "5e-4"]
    refused = run_train(
        *RESUME_RUN, *changed, "--output_dir", tmp_path / "a", "--resume_from_checkpoint", step_12, exit_code=1
    )
    assert not (tmp_path / "a" / "model.safetensors").exists()
    assert "would not resume exactly" in refused.log
    assert "--learning_rate 0.001 -> 0.0005" in refused.log and "--per_device_train_batch_size 16 -> 32" in refused.log
    # settings that only say how the run reports and saves may change: the resume stays exact (from step_32: the
    # eight steps left are enough to show it)
    run_train(
        *RESUME_RUN,
        *("--logging_steps", "7", "--checkpointing_steps", "3"),
        *("--output_dir", tmp_path / "b", "--resume_from_checkpoint", uninterrupted / "step_32"),
    )
    assert_same_weights(uninterrupted, tmp_path / "b")
    assert checkpoints(tmp_path / "b") == ["step_33", "step_36", "step_39"]
    # accepted: from the same 192 samples (12 steps of 16), now 6 steps of 32, at the new learning rate
    accepted = run_train(
        *RESUME_RUN,
        *changed,
        *("--output_dir", tmp_path / "c", "--resume_from_checkpoint", step_12, "--resume_with_changes"),
    )
    assert "Going on from 192 training samples: step 6, batch 6 of epoch 1, peak learning rate 0.0005" in accepted.log
    history = json.loads((tmp_path / "c" / "history.json").read_text())
    assert [row["step"] for row in history] == [10, 20]  # 10 steps an epoch at 32
    recorded = json.loads((tmp_path / "c" / "step_20" / "args.json").read_text())
    assert recorded["per_device_train_batch_size"] == 32 and recorded["learning_rate"] == 5e-4
    assert recorded["resumed_with_changes"][0]["changes"]["learning_rate"] == [0.001, 0.0005]
    optimizer = torch.load(tmp_path / "c" / "step_20" / "optimizer.bin", weights_only=False)
    assert [group["initial_lr"] for group in optimizer["param_groups"]] == [5e-4, 5e-4]
    assert "resumed_with_changes" in (tmp_path / "c" / "README.md").read_text()


def test_fp16_on_cpu_skips_overflow_steps_backs_off_and_resumes_the_scaler_exactly(tmp_path):
    """torch's CPU fp16 autocast and GradScaler under train.py's real step. A first scale of 2^24 overflows fp16
    gradients: those steps are skipped and the scale halves; the guard, which counts non-finite losses, does not
    count them. 160 digits: two epochs of 10 steps, a checkpoint every 4."""
    fp16 = [*RESUME_RUN, "--max_train_samples", "160", "--mixed_precision", "fp16"]
    fp16 += ["--fp16_init_scale", str(2.0**24), "--logging_steps", "1"]
    whole = run_train(*fp16, "--output_dir", tmp_path / "whole")
    assert "precision: fp16 (--mixed_precision fp16)" in whole.log and "non-finite loss" not in whole.log
    scales = [torch.load(tmp_path / "whole" / f"step_{s}" / "scaler.pt")["scale"] for s in (4, 8, 20)]
    assert scales[0] < 2.0**24 and math.log2(scales[0]).is_integer()  # backed off by halving
    assert all(
        json.loads((tmp_path / "whole" / f"step_{s}" / "training_state.json").read_text())["nonfinite_run"] == 0
        for s in (4, 8)
    )
    weights = load_file(tmp_path / "whole" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not torch.equal(
        weights["classifier.weight"],
        load_file(tmp_path / "whole" / "step_4" / "model.safetensors")["classifier.weight"],
    )
    run_train(*fp16, "--output_dir", tmp_path / "resumed", "--resume_from_checkpoint", tmp_path / "whole" / "step_8")
    assert_same_weights(tmp_path / "whole", tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "step_20" / "scaler.pt") == torch.load(
        tmp_path / "whole" / "step_20" / "scaler.pt"
    )


def test_a_full_disk_stops_the_run_cleanly_and_a_resume_on_it_says_so(
    uninterrupted,
    small_disk,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    folder = small_disk / "run"
    save = training_loop.save_checkpoint  # the checkpoint writer the loop calls

    def fill_the_disk_then_save(accelerator, output_dir, name, *args, **kwargs):
        if name == "step_8":
            fill_the_disk(small_disk / "filler")
        return save(accelerator, output_dir, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(training_loop, "save_checkpoint", fill_the_disk_then_save)
        stopped = run_train(*RESUME_RUN, "--output_dir", folder, exit_code=1)
    assert f"could not write checkpoint '{folder / 'step_8'}': No space left on device" in stopped.error_line()
    assert "the checkpoints already there are kept (step_4)" in stopped.log and "Traceback" not in stopped.log
    assert checkpoints(folder) == ["step_4"] and not [p for p in folder.iterdir() if p.name.startswith(".tmp")]
    # a resume on the still-full disk is refused before it trains, with the same cause
    again = run_train(*RESUME_RUN, "--output_dir", folder, "--resume_from_checkpoint", "latest", exit_code=1)
    assert "No space left on device for a checkpoint in" in again.log
    (small_disk / "filler").unlink()
    run_train(*RESUME_RUN, "--output_dir", folder, "--resume_from_checkpoint", "latest")
    assert_same_weights(uninterrupted, folder)
    assert history_without_timing(folder) == history_without_timing(uninterrupted)
