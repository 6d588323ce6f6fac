"""train.py's options in combination, in this process through `train.main(argv)`: a fine-tune at another size that
ends its run early, model flags on a starting checkpoint, every ranged flag, labels of different kinds, and what the
end of a run tells its user (the commands it prints are run as printed)."""

import argparse
import json
import logging
import math
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from huggingface_hub import ModelCard
from PIL import Image
from train_runs import ENV, ROOT, SHORT_RUN, TINY_MODEL, fresh_accelerator_state, reset_accelerator_state, run_train

from swin_tiny_hf import SwinTinyForImageClassification, make_image_processor, save_model_and_processor
from swin_tiny_hf.training import accelerator as accelerator_module
from swin_tiny_hf.training import loop as training_loop
from swin_tiny_hf.training.collate import MixupCutmixCollator
from swin_tiny_hf.training.flags import model_overrides
from swin_tiny_hf.training.optimization import learning_rate_at
from swin_tiny_hf.training.starting_model import model_config

import train
from conftest import tiny_config

# A 32 px starting checkpoint; the fine-tune trains it at 64 px on 32 digits, batch 16: two optimizer steps an
# epoch, and --max_train_steps 4 ends it after two of --num_train_epochs 50.
FINE_TUNE = [
    *"--dataset_name digits --max_train_samples 32 --max_eval_samples 16 --per_device_train_batch_size 16".split(),
    *"--image_size 64 --max_train_steps 4 --num_train_epochs 50 --warmup_epochs 1 --learning_rate 1e-3".split(),
    *"--mix_off_first_epochs 0 --mix_off_last_epochs 1 --mixup_prob 1 --cutmix_prob 0".split(),
]


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory):
    """(start folder, run folder, what the run saw: mixing per epoch, evaluation input sizes, its log)."""
    folder = tmp_path_factory.mktemp("fine_tune")
    start = folder / "start"
    model = SwinTinyForImageClassification(tiny_config(num_labels=10, window_size=4, depths=[2, 2], num_heads=[1, 2]))
    save_model_and_processor(model, start, make_image_processor(32))
    seen = {"mixing": {}, "eval_sizes": set()}
    collate, evaluate = MixupCutmixCollator.__call__, training_loop.evaluate_model  # the epoch loop's evaluation

    def recording_collate(self, examples):
        seen["mixing"][self.epoch] = self.mixing
        return collate(self, examples)

    def recording_evaluate(model, dataloader, *args, **kwargs):
        seen["eval_sizes"].update(tuple(batch["pixel_values"].shape[-2:]) for batch in dataloader)
        return evaluate(model, dataloader, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MixupCutmixCollator, "__call__", recording_collate)
        patch.setattr(training_loop, "evaluate_model", recording_evaluate)
        run = run_train(*FINE_TUNE, "--model_name_or_path", start, "--output_dir", folder / "run")
    seen["log"] = run.messages("train")
    return start, folder / "run", seen


# Each in-process run builds its Accelerator afresh (accelerate keeps one state per process, and refuses a second
# precision in it), as a new process would; other test modules build Accelerators in this process too.
pytestmark = pytest.mark.usefixtures(fresh_accelerator_state.__name__)


def test_mixing_switches_off_in_the_last_epochs_of_a_run_that_max_train_steps_ends(fine_tuned):
    """--mix_off_last_epochs counts back from the run's real end (2 epochs), not from --num_train_epochs (50)."""
    _, run, seen = fine_tuned
    assert seen["mixing"] == {0: True, 1: False}
    assert [row["epoch"] for row in json.loads((run / "history.json").read_text())] == [1, 2]


def test_a_fine_tune_at_another_size_uses_the_run_size_everywhere(fine_tuned):
    """The starting checkpoint resizes to 32 px; the run trains at 64: it evaluates at 64, and best/ and the
    final model save a processor that resizes to 64 beside a config that says 64."""
    start, run, seen = fine_tuned
    assert json.loads((start / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}
    assert seen["eval_sizes"] == {(64, 64)}
    for folder in (run, run / "best"):
        assert json.loads((folder / "config.json").read_text())["image_size"] == 64
        assert json.loads((folder / "preprocessor_config.json").read_text())["size"] == {"height": 64, "width": 64}
    assert "its processor resizes to 64 x 64" in seen["log"]


def test_the_model_card_says_what_the_run_fine_tuned_and_its_usage_code_runs_as_printed(fine_tuned, tmp_path):
    start, run, _ = fine_tuned
    card = ModelCard.load(run / "README.md")
    assert f"fine-tuned from `{start}` on `digits`" in card.text and "trained from scratch" not in card.text
    assert card.data.base_model is None  # a local folder is no Hub id: the Hub would refuse it in the metadata
    code = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    assert f'model="{run.resolve()}"' in code  # the folder, wherever the code runs from (not "run")
    Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "image.jpg")
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'label'" in result.stdout and "'score'" in result.stdout


def test_the_learning_rate_recorded_is_the_one_each_epoch_last_step_ran_with(fine_tuned):
    """history.json's lr: the rate of the epoch's last optimizer step (steps 2 and 4), not the next step's."""
    _, run, _ = fine_tuned
    history = json.loads((run / "history.json").read_text())
    for row in history:
        expected = learning_rate_at(row["step"] - 1, 1e-3, warmup_steps=2, total_steps=4, min_lr=5e-6)
        assert row["lr"] == pytest.approx(expected, rel=1e-9)
    assert history[-1]["lr"] == pytest.approx(5e-6)  # the last step runs at the minimum


def test_the_end_of_a_run_names_the_model_and_commands_that_run_as_printed(fine_tuned, tmp_path):
    _, run, seen = fine_tuned
    log = seen["log"]
    assert f"The final model (weights, config, image processor, model card) is in {run.resolve()}" in log
    assert f"The best epoch's model is in {run.resolve() / 'best'}" in log
    commands = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in log.splitlines()[-4:]}
    assert set(commands) == {"evaluate", "predict", "export", "push"}
    assert commands["push"].startswith(f"hf upload YOUR_NAME/run {run.resolve() / 'best'}")
    Image.new("RGB", (20, 20), (10, 200, 10)).save(tmp_path / "digit.png")
    predict = shlex.split(commands["predict"].replace("IMAGE [IMAGE ...]", str(tmp_path / "digit.png")))
    printed = subprocess.run(predict, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert printed.returncode == 0, printed.stderr[-3000:]
    lines = printed.stdout.splitlines()
    assert lines[0] == str(tmp_path / "digit.png") and len(lines) == 6  # the file, then its top 5 classes
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    evaluation = shlex.split(commands["evaluate"])
    assert evaluation[:2] == [sys.executable, str(ROOT / "train.py")] or evaluation[0] == "python"
    assert "--max_eval_samples" in evaluation and "--dataset_name" in evaluation
    results = train.main(evaluation[2:])  # the same flags, in this process
    final = json.loads((run / "all_results.json").read_text())
    assert results["eval_samples"] == final["eval_samples"] == 16
    assert results["eval_accuracy"] == pytest.approx(final["eval_accuracy"])
    assert results["eval_loss"] == pytest.approx(final["eval_loss"], rel=1e-5)


def test_model_flags_on_a_starting_checkpoint_are_validated_as_without_one(fine_tuned, capsys):
    start = str(fine_tuned[0])
    for flags in (["--drop_path_rate", "1.5"], ["--window_size", "3"], ["--depths", "2", "2", "2"]):
        messages = []
        for starting in ([], ["--model_name_or_path", start]):
            base = ["--image_size", "32", "--patch_size", "2", "--depths", "2", "2", "--num_heads", "1", "2"]
            base += ["--window_size", "4"]
            with pytest.raises(SystemExit) as stopped:
                train.parse_args([*base, *starting, *flags, "--embed_dim", "16", "--output_dir", "x"])
            assert stopped.value.code == 2
            messages.append(capsys.readouterr().err.strip().splitlines()[-1])
        assert messages[0] == messages[1], flags  # the config's own message, with and without the checkpoint
    # a valid override on a checkpoint is applied, not dropped: the config a run builds has it
    args = train.parse_args(["--model_name_or_path", start, "--window_size", "8", "--output_dir", "x"])
    config = model_config(args.model_name_or_path, model_overrides(args), [str(d) for d in range(10)])
    assert config.window_size == [8, 8] and config.image_size == 32 and config.depths == [2, 2]


def ranged_flags():
    """(flag, type, interval) of every flag whose type carries its range."""
    parser = train.get_args_parser()
    return [
        (action.option_strings[0], action.type, action.type.interval)
        for action in parser._actions
        if getattr(action.type, "interval", None)
    ]


def test_every_ranged_flag_refuses_values_outside_its_range_at_parse_time(capsys):
    flags = {flag: interval for flag, _, interval in ranged_flags()}
    for flag in ("--max_train_steps", "--num_train_epochs", "--per_device_train_batch_size", "--seed", "--lr_base"):
        assert flag in flags  # --max_train_steps fell through every list before
    for flag, kind, interval in ranged_flags():
        low, high = (float(bound) for bound in interval[1:-1].split(","))
        integer = kind.__name__.startswith("int")
        outside = [low - 1 if integer else low - 0.5] if interval[0] == "[" else [low]
        if math.isfinite(high):
            outside.append(high + 1 if interval[-1] == "]" else high)
        inside = low if interval[0] == "[" else (low + 1 if integer else (low + min(high, low + 1)) / 2)
        for value in outside:
            shown = str(int(value)) if integer else str(value)
            with pytest.raises(SystemExit):
                train.parse_args([flag, shown, "--output_dir", "x"])
            message = capsys.readouterr().err
            assert f"argument {flag}: expected " in message and f", got {shown}" in message, (flag, message)
        if integer:
            with pytest.raises(SystemExit):
                train.parse_args([flag, "1.5", "--output_dir", "x"])
            assert f"argument {flag}: expected an integer, got '1.5'" in capsys.readouterr().err
        else:
            with pytest.raises(SystemExit):
                train.parse_args([flag, "nan", "--output_dir", "x"])
            assert f"argument {flag}: expected a finite number, got 'nan'" in capsys.readouterr().err
        value = str(int(inside)) if integer else str(inside)
        # rules between flags: the probabilities' sum, an alpha for a mix that is on, the minimum learning rate
        if flag not in ("--mixup_prob", "--cutmix_prob", "--mixup_alpha", "--cutmix_alpha", "--min_learning_rate"):
            assert isinstance(train.parse_args([flag, value, "--output_dir", "x"]), argparse.Namespace)
    for value, rule in (("0", "an integer of at least 1"), ("-3", "an integer of at least 1")):
        with pytest.raises(SystemExit):
            train.parse_args(["--max_train_steps", value, "--output_dir", "x"])
        assert f"argument --max_train_steps: expected {rule}, got {value}" in capsys.readouterr().err


def test_integer_training_labels_and_string_validation_labels_stop_cleanly(tmp_path, caplog):
    image = Image.new("RGB", (8, 8))
    features = {"image": ImageFeature()}
    DatasetDict(
        train=Dataset.from_dict(
            {"image": [image] * 4, "label": [0, 1, 0, 1]}, features=Features(features, label=Value("int64"))
        ),
        validation=Dataset.from_dict(
            {"image": [image] * 2, "label": ["cat", "dog"]}, features=Features(features, label=Value("string"))
        ),
    ).save_to_disk(tmp_path / "data")
    with caplog.at_level(logging.ERROR, logger="train"), pytest.raises(SystemExit) as stopped:
        train.main(["--dataset_name", str(tmp_path / "data"), *TINY_MODEL, "--output_dir", str(tmp_path / "run")])
    assert stopped.value.code == 1
    assert "split 'train' holds integer class ids but split 'validation' holds class names" in caplog.text


def test_validation_fraction_of_a_dataset_with_its_own_split_is_said_to_be_unused(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="train"):
        train.main([*SHORT_RUN, *TINY_MODEL, "--validation_fraction", "0.3", "--output_dir", str(tmp_path)])
    assert "--validation_fraction 0.3 is not used: the dataset has its own validation split 'validation'" in (
        caplog.text
    )


def test_the_log_says_where_the_precision_came_from(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what `accelerate launch` passes when not told
    monkeypatch.setattr(accelerator_module, "native_cpu_bf16", lambda: False)
    with caplog.at_level(logging.INFO, logger="train"):
        train.main([*SHORT_RUN, *TINY_MODEL, "--output_dir", str(tmp_path)])
    assert "precision: fp32 (--mixed_precision auto: accelerate launch passed 'no' (its value when not told)" in (
        caplog.text
    )
    assert torch.get_autocast_dtype("cpu") is not None  # (autocast state untouched by the run)


def test_tracking_to_tensorboard_and_bf16_autocast_on_cpu(tmp_path, monkeypatch):
    """bf16 really runs the arithmetic in bf16: the log and the checkpoint's args say so, every forward runs under
    CPU autocast to bf16 (the logits come out of the classifier in bf16), and the same run in fp32 (no autocast,
    fp32 logits) gives close but other losses."""
    forward, forwards = SwinTinyForImageClassification.forward, []

    def recording_forward(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        forwards.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), outputs.logits.dtype))
        return outputs

    monkeypatch.setattr(SwinTinyForImageClassification, "forward", recording_forward)
    losses, seen = {}, {}
    for precision in ("bf16", "no"):
        folder = tmp_path / precision
        flags = ["--with_tracking", "--report_to", "tensorboard"] if precision == "bf16" else []
        forwards.clear()
        run = run_train(
            *SHORT_RUN,
            *TINY_MODEL,
            *flags,
            *("--mixed_precision", precision, "--checkpointing_steps", "epoch", "--output_dir", folder),
        )
        shown = "fp32" if precision == "no" else precision
        assert f"INFO train: precision: {shown} (--mixed_precision {precision})" in run.log
        assert json.loads((folder / "epoch_1" / "args.json").read_text())["mixed_precision_resolved"] == precision
        seen[precision] = set(forwards)
        (row,) = json.loads((folder / "history.json").read_text())
        losses[precision] = (row["train_loss"], row["val_loss"])
    assert seen["bf16"] == {(True, torch.bfloat16, torch.bfloat16)}  # 2 training and 1 evaluation forward
    assert {(enabled, logits) for enabled, _, logits in seen["no"]} == {(False, torch.float32)}
    assert list((tmp_path / "bf16").rglob("events.out.tfevents.*"))
    assert "| mixed_precision | bf16 |" in (tmp_path / "bf16" / "best" / "README.md").read_text()
    assert all(math.isfinite(value) for value in losses["bf16"])
    assert losses["bf16"] != losses["no"]  # autocast changed the arithmetic ...
    assert losses["bf16"] == pytest.approx(losses["no"], abs=0.05)  # ... of the same training


def test_overwriting_a_folder_that_holds_the_starting_model_is_refused_before_deleting(fine_tuned, tmp_path, caplog):
    start, _, _ = fine_tuned
    folder = tmp_path / "run"
    shutil.copytree(start, folder / "start")
    flags = [*SHORT_RUN, "--model_name_or_path", str(folder / "start"), "--output_dir", str(folder)]
    with caplog.at_level(logging.ERROR, logger="train"), pytest.raises(SystemExit) as stopped:
        train.main([*flags, "--overwrite_output_dir", "--ignore_mismatched_sizes"])
    assert stopped.value.code == 1
    assert f"--overwrite_output_dir would delete --model_name_or_path '{folder / 'start'}', which this run reads" in (
        caplog.text
    )
    assert (folder / "start" / "model.safetensors").is_file()  # nothing deleted


def test_stops_before_training_name_the_cause_and_free_the_folder(fine_tuned, tmp_path, caplog):
    """A resume with no checkpoint, and a checkpoint whose head does not fit: a clean exit 1 each, and the folder's
    lock is free again for the rest of the process (a notebook, a sweep)."""
    from swin_tiny_hf.training.output_folder import _HELD

    start = str(fine_tuned[0])  # 10 classes
    with caplog.at_level(logging.ERROR, logger="train"), pytest.raises(SystemExit) as stopped:
        train.main(
            [*SHORT_RUN, *TINY_MODEL, "--resume_from_checkpoint", "latest", "--output_dir", str(tmp_path / "a")]
        )
    assert stopped.value.code == 1 and "no complete checkpoint in" in caplog.text and "Traceback" not in caplog.text
    assert str(tmp_path.resolve()) not in _HELD
    reset_accelerator_state()
    image = Image.new("RGB", (8, 8))
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    DatasetDict(
        train=Dataset.from_dict({"image": [image] * 32, "label": [0, 1] * 16}, features=features),
        validation=Dataset.from_dict({"image": [image] * 4, "label": [0, 1] * 2}, features=features),
    ).save_to_disk(tmp_path / "two_classes")
    flags = ["--dataset_name", str(tmp_path / "two_classes"), "--per_device_train_batch_size", "16"]
    with caplog.at_level(logging.ERROR, logger="train"), pytest.raises(SystemExit) as stopped:
        train.main([*flags, "--model_name_or_path", start, "--output_dir", str(tmp_path / "b")])
    assert stopped.value.code == 1 and "its weights do not fit the run's model (2 classes" in caplog.text
    assert "Pass --ignore_mismatched_sizes" in caplog.text and str((tmp_path / "b").resolve()) not in _HELD


def test_a_checkpoint_without_a_grad_scaler_resumes_in_fp16(tmp_path, caplog):
    """An fp32 (or bf16) run resumed in fp16 with --resume_with_changes: the scaler starts afresh."""
    flags = [*SHORT_RUN, *TINY_MODEL, "--checkpointing_steps", "1", "--output_dir", str(tmp_path)]
    train.main([*flags, "--mixed_precision", "no", "--max_train_steps", "1"])
    reset_accelerator_state()
    with caplog.at_level(logging.WARNING, logger="train"):
        resumed = [*flags, "--mixed_precision", "fp16", "--resume_from_checkpoint", "latest", "--resume_with_changes"]
        results = train.main(resumed)
    assert "holds no grad scaler (written without fp16): the fp16 loss scale starts afresh" in caplog.text
    assert json.loads((tmp_path / "history.json").read_text())[-1]["step"] == 2 and results["epoch"] == 1
    assert (tmp_path / "step_2" / "scaler.pt").is_file()


def test_flags_that_cannot_go_together_are_parse_errors(capsys):
    for flags, message in (
        (["--mixup_alpha", "0"], "--mixup_alpha must be positive when --mixup_prob > 0, got 0.0 (--mixup_prob 0.3)"),
        (["--cutmix_alpha", "0", "--cutmix_prob", "0"], None),  # no CutMix: its alpha is not read
        (["--learning_rate", "1e-5", "--min_learning_rate", "1e-4"], "--min_learning_rate 0.0001 is above"),
        (["--eval_only", "--model_name_or_path", "x", "--resume_from_checkpoint", "latest"], "it resumes nothing"),
    ):
        if message is None:
            assert train.parse_args([*flags, "--output_dir", "x"]).cutmix_alpha == 0
            continue
        with pytest.raises(SystemExit) as stopped:
            train.parse_args([*flags, "--output_dir", "x"])
        assert stopped.value.code == 2 and message in capsys.readouterr().err, flags
