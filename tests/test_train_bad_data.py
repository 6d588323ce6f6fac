"""train.py with bad data, end to end (in this process through `train.main`; two processes in a subprocess): a
corrupt training image stops the run named and costs no more than the work since the last checkpoint;
--skip_bad_images goes on and reports; splits too small, limits out of range and a warmup longer than the run are
caught before training."""

import json

import pytest
from datasets import DatasetDict
from train_runs import (
    TIN_RUN,
    TWO_CPU_PROCESSES_ENV,
    TWO_PROCESSES,
    assert_same_weights,
    checkpoints,
    history_without_timing,
    run_train,
    train_subprocess,
)

from swin_tiny_hf.training.synthetic_dataset import write_hub_layout

from datasets_for_tests import tiny_imagenet_like

BAD_ROW = (
    26  # cut short: in the 4th batch of 8 of epoch 1 (--seed 42; accelerate reads one batch ahead), the 2nd of epoch 2
)


def dataset_with(tmp_path, train_rows=(), valid_rows=(), none_train_rows=()) -> str:
    """tiny_imagenet_like (32 train / 16 valid rows, 4 classes) in the Hub layout, with the given rows broken."""
    data = tiny_imagenet_like(train_per_class=8, valid_per_class=4)
    splits = {}
    for name, broken, missing in (("train", train_rows, none_train_rows), ("valid", valid_rows, ())):
        rows = data[name].cast_column("image", data[name].features["image"].__class__(decode=False))
        images = list(rows["image"])
        for row in broken:
            images[row] = {"bytes": images[row]["bytes"][:200], "path": None}  # a truncated JPEG
        for row in missing:
            images[row] = None
        splits[name] = rows.remove_columns("image").add_column("image", images, feature=rows.features["image"])
    folder = tmp_path / "data"
    write_hub_layout(DatasetDict(splits), folder, {"train": 2})
    return str(folder)


def run_flags(tmp_path, dataset, output, *extra):
    return [
        "--dataset_name",
        dataset,
        "--cache_dir",
        str(tmp_path / "cache"),  # datasets' cache would serve another test's folder of the same layout
        *TIN_RUN,
        "--checkpointing_steps",
        "2",
        "--output_dir",
        str(tmp_path / output),
        *extra,
    ]


def test_a_corrupt_training_image_stops_named_and_skip_bad_images_resumes_from_the_checkpoint(tmp_path):
    dataset = dataset_with(tmp_path, train_rows=[BAD_ROW])
    stopped = run_train(*run_flags(tmp_path, dataset, "run"), exit_code=1)
    last_line = stopped.error_line()
    assert "Traceback" not in stopped.log
    assert f"could not decode the image of split 'train' row {BAD_ROW} (shard '" in last_line
    assert "train-00001-of-00002.parquet', its row" in last_line
    assert "--skip_bad_images --resume_from_checkpoint latest" in last_line
    kept = checkpoints(tmp_path / "run")
    assert kept == ["step_2"]  # what was checkpointed before the bad batch is all that is kept, and all that is lost
    resumed = run_train(
        *run_flags(tmp_path, dataset, "run", "--skip_bad_images", "--resume_from_checkpoint", "latest")
    )
    assert f"--skip_bad_images: skipped could not decode the image of split 'train' row {BAD_ROW}" in resumed.log
    run_train(*run_flags(tmp_path, dataset, "uninterrupted", "--skip_bad_images"))
    assert_same_weights(tmp_path / "run", tmp_path / "uninterrupted")
    assert history_without_timing(tmp_path / "run") == history_without_timing(tmp_path / "uninterrupted")
    results = json.loads((tmp_path / "run" / "all_results.json").read_text())
    assert results["bad_images"]["skipped_in_training_per_epoch"] == [1, 1]
    assert results["bad_images"]["dropped_at_start"] == {"train": 0, "validation": 0}
    [listed] = results["bad_images"]["listed"]
    assert (listed["split"], listed["row"], listed["epoch"]) == ("train", BAD_ROW, 1)
    assert [row["skipped_images"] for row in json.loads((tmp_path / "run" / "history.json").read_text())] == [1, 1]


def test_bad_rows_found_at_start_are_refused_or_dropped_and_reported(tmp_path):
    dataset = dataset_with(tmp_path, valid_rows=[5], none_train_rows=[3])
    refused = run_train(*run_flags(tmp_path, dataset, "refused"), exit_code=1)
    assert "Traceback" not in refused.log
    message = refused.error_line()
    assert "1 bad images in split 'train': could not decode the image of split 'train' row 3" in message
    assert "the row has no image (None)" in message and "pass --skip_bad_images" in message
    assert not (tmp_path / "refused" / "step_2").exists()
    skipped = run_train(*run_flags(tmp_path, dataset, "skipped", "--skip_bad_images", "--num_train_epochs", "1"))
    assert "--skip_bad_images: dropping 1 bad images in split 'valid'" in skipped.log
    results = json.loads((tmp_path / "skipped" / "all_results.json").read_text())
    assert results == skipped.results
    assert results["eval_samples"] == 15
    assert results["bad_images"]["dropped_at_start"] == {"train": 1, "validation": 1}
    assert [(b["split"], b["row"]) for b in results["bad_images"]["listed"]] == [("train", 3), ("valid", 5)]
    assert "valid-00000-of-00001.parquet', its row 5)" in results["bad_images"]["listed"][1]["error"]


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory) -> str:
    return dataset_with(tmp_path_factory.mktemp("clean"))


@pytest.mark.parametrize(
    ("flags", "exit_code", "expected"),
    [
        (["--max_eval_samples", "0"], 2, "argument --max_eval_samples: expected an integer of at least 1, got 0"),
        (["--max_train_samples", "0"], 2, "argument --max_train_samples: expected an integer of at least 1, got 0"),
        (
            ["--max_train_samples", "5"],
            1,
            "split 'train' has 5 rows after --max_train_samples, fewer than one global batch of 8 "
            "(--per_device_train_batch_size 8 x 1 processes)",
        ),
    ],
)
def test_splits_and_limits_that_cannot_train_are_refused_before_training(
    clean_dataset, tmp_path, capsys, flags, exit_code, expected
):
    """Out of range: the parser's error (exit 2); too few rows for a batch: the run's error (exit 1)."""
    result = run_train(*run_flags(tmp_path, clean_dataset, "out", *flags), exit_code=exit_code)
    message = capsys.readouterr().err if exit_code == 2 else result.error_line()
    assert expected in message and "Traceback" not in result.log
    assert not (tmp_path / "out" / "step_2").exists()


def test_warnings_that_save_a_run(clean_dataset, tmp_path):
    """--max_train_samples above the rows, a warmup longer than the run: warned; the learning rate readable."""
    result = run_train(
        *run_flags(tmp_path, clean_dataset, "out", "--max_train_samples", "1000", "--num_train_epochs", "1"),
        "--warmup_epochs",
        "3",
        "--learning_rate",
        "1e-3",
    )
    assert "--max_train_samples 1000 is more than split 'train' has (32 rows): using all of them" in result.log
    assert (
        "the warmup (--warmup_epochs 3: 12 optimizer steps of 4 per epoch) is as long as the run or longer (4 "
        "steps): the learning rate climbs from 1.000e-05 and never reaches its peak 1.000e-03 (it ends at 2.575e-04)"
    ) in result.log
    epoch_line = next(line for line in result.log.splitlines() if "epoch 1: " in line)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert f"lr {history[0]['lr']:.3e}" in epoch_line and history[0]["lr"] < 1e-3


def test_two_processes_share_the_checks_and_count_each_skipped_image_once(tmp_path):
    """Each process decodes its share of the validation split and skips the bad training rows of its batches;
    the gathered report counts every bad image once."""
    dataset = dataset_with(tmp_path, train_rows=[BAD_ROW], valid_rows=[5])
    flags = run_flags(tmp_path, dataset, "ddp", "--skip_bad_images", "--dataloader_num_workers", "0")
    log = train_subprocess(*flags, launcher=TWO_PROCESSES, env=TWO_CPU_PROCESSES_ENV).stderr
    # the rows dropped at start are the same on both processes: said once; a skipped one by the process that met it
    assert log.count("--skip_bad_images: dropping 1 bad images in split 'valid'") == 1, log[-3000:]
    assert log.count(f"--skip_bad_images: skipped could not decode the image of split 'train' row {BAD_ROW}") == 2
    results = json.loads((tmp_path / "ddp" / "all_results.json").read_text())
    # 32 rows, 8 per device x 2 processes: every row is read once an epoch, by one of the two processes
    assert results["bad_images"]["skipped_in_training_per_epoch"] == [1, 1]
    assert results["bad_images"]["dropped_at_start"] == {"train": 0, "validation": 1}
    assert results["eval_samples"] == 15
    assert [(b["split"], b["row"]) for b in results["bad_images"]["listed"]] == [("valid", 5), ("train", BAD_ROW)]
