"""train.py's faults in combination, end to end: the preemption handler on every way out of a run and in
--eval_only, every writer of the run on a full disk, and the final model replaced atomically. Signals, kills and two
processes run in subprocesses; the rest in this process through `train.main`."""

import errno
import inspect
import os
import signal
import subprocess
import sys

import pytest
from train_runs import (
    ENV,
    ROOT,
    SHORT_RUN,
    TINY_MODEL,
    TWO_CPU_PROCESSES_ENV,
    TWO_PROCESSES,
    drive,
    fill_the_disk,
    run_train,
    small_disk,  # noqa: F401 (a fixture)
)

from swin_tiny_hf.training import artifacts
from swin_tiny_hf.training import loop as training_loop

import train

# What a run's model folder holds (save_pretrained with the remote code, the image processor, the model card).
MODEL_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run with a checkpoint at each of its two steps."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    run_train(*SHORT_RUN, *TINY_MODEL, "--checkpointing_steps", "1", "--output_dir", folder)
    return folder


# ------------------------------------------------------------------------------------ the preemption handler
def test_after_a_run_refused_before_training_a_sigterm_has_its_default_effect(finished, tmp_path):
    """main() returns (SystemExit 1) after a refused resume, bad data and a full device; the caller's process (a
    notebook, a sweep) gets its own SIGTERM handling back each time: the last SIGTERM ends it."""
    runs = {
        "refused resume": [
            *SHORT_RUN,
            *TINY_MODEL,
            "--learning_rate",
            "5e-4",
            "--resume_from_checkpoint",
            str(finished / "step_1"),
            "--output_dir",
            str(tmp_path / "refused"),
        ],
        "bad data": [*SHORT_RUN, *TINY_MODEL, "--max_train_samples", "5", "--output_dir", str(tmp_path / "bad")],
        "no free space": [
            *SHORT_RUN,
            *TINY_MODEL,
            "--checkpointing_steps",
            "1",
            "--output_dir",
            str(tmp_path / "full"),
        ],
    }
    script = tmp_path / "runs.py"
    script.write_text(
        f"import os, shutil, signal, sys, time\nsys.path.insert(0, {str(ROOT)!r})\nimport train\n"
        "usage = shutil.disk_usage\n"
        "def nearly_full(path):\n"
        "    return usage(path)._replace(free=1024) if 'full' in str(path) else usage(path)\n"
        "shutil.disk_usage = nearly_full\n"
        f"for reason, flags in {runs!r}.items():\n"
        "    try:\n"
        "        train.main(flags)\n"
        "    except SystemExit as stop:\n"
        "        handler = signal.getsignal(signal.SIGTERM)\n"
        "        print(reason, stop.code, 'default' if handler == signal.SIG_DFL else handler, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(30)\n"
        "print('still running', flush=True)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert result.stdout.splitlines() == ["refused resume 1 default", "bad data 1 default", "no free space 1 default"]
    assert result.returncode == -signal.SIGTERM, result.stderr[-3000:]
    assert "would not resume exactly" in result.stderr and "fewer than one global batch" in result.stderr
    assert "No space left on device for a checkpoint in" in result.stderr


@pytest.mark.parametrize("when", ["loading the data", "evaluating"])
def test_a_sigterm_in_eval_only_stops_it_with_143_and_writes_nothing(finished, tmp_path, when):
    target = "load_data" if when == "loading the data" else "evaluate_model"
    patch = (
        f"original = train.{target}\n"  # both called from train.py's run for --eval_only
        "def signal_then_go_on(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return original(*args, **kwargs)\n"
        f"train.{target} = signal_then_go_on\n"
    )
    flags = "--dataset_name digits --max_eval_samples 40 --per_device_eval_batch_size 8 --eval_only".split()
    output = tmp_path / "eval"
    result = drive(tmp_path, patch, *flags, "--model_name_or_path", str(finished), "--output_dir", str(output))
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "SIGTERM received: the evaluation stopped before its end and wrote nothing" in result.stderr
    assert "Traceback" not in result.stderr
    assert [p.name for p in output.iterdir()] == []  # no all_results.json, and the lock went with the run


# ------------------------------------------------------------------------------------------- a full disk
def fill_before(writer: str, disk):
    """(module, name in it, wrapper of it): fills `disk` just before `writer` (history, best, final or all_results)
    writes. best/ is saved from train.py's save_best, the final model from artifacts.write_final_outputs."""

    def is_model_folder(args, name: str) -> bool:
        return args[2].name.endswith(name)  # save_model_folder(model, image_processor, folder, ...)

    if writer == "history":  # history.json is the first thing written after an evaluation
        original = training_loop.evaluate_model  # the epoch loop's evaluation, then history.json

        def evaluate_then_fill(*args, **kwargs):
            result = original(*args, **kwargs)
            fill_the_disk(disk / "filler")
            return result

        return training_loop, "evaluate_model", evaluate_then_fill
    module = train if writer == "best" else artifacts
    original = module.save_model_folder

    def fill_then_save(*args, **kwargs):
        if writer in ("best", "final") and is_model_folder(args, writer):
            fill_the_disk(disk / "filler")
        result = original(*args, **kwargs)
        if writer == "all_results" and is_model_folder(args, "final"):  # written after the final model
            fill_the_disk(disk / "filler")
        return result

    return module, "save_model_folder", fill_then_save


@pytest.mark.parametrize(
    ("writer", "what", "path"),
    [
        ("history", "the history", "history.json"),
        ("best", "the best model", "best"),
        ("final", "the final model", "final"),
        ("all_results", "the results", "all_results.json"),
    ],
)
def test_a_full_disk_while_writing_the_run_outputs_stops_cleanly_and_leaves_nothing_partial(
    small_disk,  # noqa: F811
    monkeypatch,
    writer,
    what,
    path,
):
    folder = small_disk / "run"
    monkeypatch.setattr(*fill_before(writer, small_disk))
    result = run_train(*SHORT_RUN, *TINY_MODEL, "--output_dir", folder, exit_code=1)
    assert "Traceback" not in result.log
    message = result.error_line()
    assert f"could not write {what} '{folder / path}': No space left on device (" in message
    assert " MiB free on its device" in message
    names = {p.name for p in folder.iterdir()}
    assert not [name for name in names if name.startswith(".")]  # no temporary file or folder, not even the lock
    assert path not in names  # nothing half-written under its name
    if writer in ("history", "best", "final"):  # the final model comes after them: none of its files is there
        assert not names & MODEL_FILES


def test_a_full_disk_met_by_a_writer_the_run_does_not_guard_stops_cleanly(tmp_path, monkeypatch):
    """The last line of defence, for a writer outside the run's own (a tracker's event file, written from its
    thread): an OSError "No space left on device" anywhere in the run stops it with the path and the free space."""
    events = tmp_path / "out" / "events.out.tfevents"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(events))

    monkeypatch.setattr(train, "run", full)
    result = run_train(*SHORT_RUN, *TINY_MODEL, "--output_dir", tmp_path / "out", exit_code=1)
    assert "Traceback" not in result.log
    assert f"could not write '{events}': No space left on device (" in result.error_line()


def test_a_full_disk_while_one_of_two_processes_writes_best_stops_both(small_disk, tmp_path):  # noqa: F811
    """best/ is written by the main process only: the other one learns of the failure and stops too."""
    folder = small_disk / "run"
    patch = (
        f"{inspect.getsource(fill_the_disk)}\n"
        "save = train.save_model_folder\n"  # best/ is saved from train.py's save_best
        "def fill_then_save(*args, **kwargs):\n"
        "    if args[2].name.endswith('best'):\n"
        f"        fill_the_disk({str(small_disk / 'filler')!r})\n"
        "    return save(*args, **kwargs)\n"
        "train.save_model_folder = fill_then_save\n"
    )
    flags = [*SHORT_RUN, *TINY_MODEL, "--per_device_train_batch_size", "8", "--dataloader_num_workers", "0"]
    script_env = {**ENV, **TWO_CPU_PROCESSES_ENV}
    script = tmp_path / "drive_best.py"
    script.write_text(
        f"import os, signal, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport train\n{patch}\n"
        f"sys.argv = ['train.py', *{[*flags, '--output_dir', str(folder)]!r}]\ntrain.main()\n"
    )
    result = subprocess.run(
        [*TWO_PROCESSES, str(script)], capture_output=True, text=True, env=script_env, cwd=ROOT, timeout=600
    )
    # the launcher prints its own traceback for a process that exits with 1; none comes from the run
    ours = [f'File "{ROOT / "train.py"}"', f'File "{ROOT / "swin_tiny_hf"}', 'drive_best.py", line']
    assert result.returncode != 0 and not [f for f in ours if f in result.stderr], result.stderr[-3000:]
    lines = [line for line in result.stderr.replace("\r", "\n").splitlines() if " ERROR train: " in line]
    assert len(lines) == 2 and all(f"could not write the best model '{folder / 'best'}'" in line for line in lines)
    assert not (folder / "best").exists() and not (folder / ".tmp-best").exists()


# ------------------------------------------------------------------------------------------ the final model
@pytest.mark.parametrize("kill_after", ["a model file", 1, 2])
def test_a_kill_while_the_final_model_is_replaced_leaves_one_whole_model(finished, tmp_path, kill_after):
    """A finished run resumed in its own folder for another epoch: its final model replaces the first one.
    SIGKILL right after a rename: after the first of model.safetensors / README.md is renamed into place, or after
    the k-th rename of writing the final model. Each time, output_dir holds one whole model: the old one's weights
    and card, or the new one's."""
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(finished, folder, symlinks=True)
    old = {name: (folder / name).read_bytes() for name in ("model.safetensors", "README.md")}
    patch = (
        "import swin_tiny_hf.training.checkpointing as checkpointing\n"
        "renames = []\n"
        "def killing(rename):\n"
        "    def renamed(source, destination, *args, **kwargs):\n"
        "        result = rename(source, destination, *args, **kwargs)\n"
        "        if writing:\n"
        "            renames.append(os.path.basename(os.fspath(destination)))\n"
        f"            if {kill_after!r} == 'a model file' and renames[-1] in ('model.safetensors', 'README.md'):\n"
        "                os.kill(os.getpid(), signal.SIGKILL)\n"
        f"            if len(renames) == {kill_after!r}:\n"
        "                os.kill(os.getpid(), signal.SIGKILL)\n"
        "        return result\n"
        "    return renamed\n"
        "os.rename, os.replace = killing(os.rename), killing(os.replace)\n"
        "if hasattr(checkpointing, 'exchange_paths'):\n"
        "    checkpointing.exchange_paths = killing(checkpointing.exchange_paths)\n"
        "writing = False\n"
        "finish = train.finish\n"
        "def finish_and_count(*args, **kwargs):\n"
        "    global writing\n"
        "    writing = True\n"
        "    return finish(*args, **kwargs)\n"
        "train.finish = finish_and_count\n"
    )
    # two more steps at another learning rate: other weights (the first run's last step is at the schedule's end)
    changed = [
        *("--num_train_epochs", "2", "--learning_rate", "1e-2", "--resume_with_changes"),
        *("--resume_from_checkpoint", str(folder / "step_2")),
    ]
    result = drive(tmp_path, patch, *SHORT_RUN, *TINY_MODEL, *changed, "--output_dir", str(folder))
    assert result.returncode in (0, -signal.SIGKILL), result.stderr[-3000:]
    now = {name: (folder / name).read_bytes() for name in ("model.safetensors", "README.md")}
    assert (now["model.safetensors"] == old["model.safetensors"]) == (now["README.md"] == old["README.md"])
    assert all((folder / name).is_file() for name in MODEL_FILES)
    if result.returncode == 0:  # not killed: the new model, loadable from output_dir as before
        assert now != old and not [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_the_final_model_loads_from_output_dir_and_from_final(finished):
    """The layout: a complete folder final/ and, in output_dir, a link to each of its files (relative: the folder
    can move). Both load, with the remote code."""
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    assert {p.name for p in (finished / "final").iterdir()} >= MODEL_FILES | {"modeling_swin_tiny.py"}
    for name in MODEL_FILES:
        assert (finished / name).is_symlink() and os.readlink(finished / name) == f"final/{name}"
    for folder in (finished, finished / "final"):
        model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
        assert model.config.id2label[3] == "3"
    predictions = pipeline("image-classification", model=str(finished), trust_remote_code=True)(
        Image.new("RGB", (8, 8))
    )
    assert {p["label"] for p in predictions} <= {str(d) for d in range(10)}


# -------------------------------------------------------------- the writing helpers on their own (in process)
def write_model(files: dict):
    def write(folder):
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)

    return write


def shown(folder) -> dict:
    """What a reader of the folder's top level sees: name -> text, links followed."""
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


@pytest.mark.parametrize("exchange", [True, False], ids=["atomic exchange", "renamed aside"])
def test_the_final_model_is_replaced_whole_and_a_failed_write_keeps_the_old_one(tmp_path, monkeypatch, exchange):
    import errno

    from swin_tiny_hf.training import checkpointing
    from swin_tiny_hf.training.checkpointing import OutputWriteError, write_model_in_place

    if not exchange:  # a system without renameat2's exchange
        monkeypatch.setattr(checkpointing, "exchange_paths", lambda first, second: False)
    (tmp_path / "history.json").write_text("[]")  # the run's own files are left alone
    write_model_in_place(tmp_path, write_model({"config.json": "1", "model.safetensors": "w1", "old.txt": "o"}), "m")
    assert shown(tmp_path) == {"config.json": "1", "model.safetensors": "w1", "old.txt": "o", "history.json": "[]"}
    assert os.readlink(tmp_path / "config.json") == "final/config.json"
    write_model_in_place(tmp_path, write_model({"config.json": "2", "model.safetensors": "w2"}), "m")
    # the link to a file only the old model had is gone; nothing hidden is left
    assert shown(tmp_path) == {"config.json": "2", "model.safetensors": "w2", "history.json": "[]"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "final", "history.json", "model.safetensors"]

    def full_disk(folder):
        write_model({"config.json": "3"})(folder)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OutputWriteError) as error:
        write_model_in_place(tmp_path, full_disk, "the final model")
    assert f"could not write the final model '{tmp_path / 'final'}': No space left on device (" in str(error.value)
    assert shown(tmp_path) == {"config.json": "2", "model.safetensors": "w2", "history.json": "[]"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_folder_an_older_train_py_wrote_becomes_the_linked_layout(tmp_path):
    """The model's files themselves in output_dir (before final/): the next final model replaces them by links."""
    from swin_tiny_hf.training.checkpointing import write_model_in_place

    for name, text in {"config.json": "old", "model.safetensors": "old", "README.md": "old"}.items():
        (tmp_path / name).write_text(text)
    write_model_in_place(tmp_path, write_model({"config.json": "new", "model.safetensors": "new"}), "m")
    assert shown(tmp_path) == {"config.json": "new", "model.safetensors": "new", "README.md": "old"}
    assert (tmp_path / "config.json").is_symlink() and not (tmp_path / "README.md").is_symlink()


def test_a_file_output_is_replaced_whole_and_keeps_its_suffix_while_written(tmp_path):
    from swin_tiny_hf.training.checkpointing import OutputWriteError, write_atomically, write_json_output

    write_json_output(tmp_path / "history.json", [{"epoch": 1}], "the history")
    assert (tmp_path / "history.json").read_text() == '[\n  {\n    "epoch": 1\n  }\n]'
    seen = []

    def broken(path):
        seen.append(path.name)
        path.write_bytes(b"half")
        raise RuntimeError("basic_ios::clear: iostream error")

    with pytest.raises(OutputWriteError, match="could not write the curves .*training_curves.png'.*iostream error"):
        write_atomically(tmp_path / "training_curves.png", broken, "the curves")
    assert seen == [".tmp-training_curves.png"]  # matplotlib reads the format from the suffix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_a_write_error_on_one_process_is_raised_there():
    from accelerate import Accelerator

    from swin_tiny_hf.training.checkpointing import OutputWriteError, raise_on_every_process

    accelerator = Accelerator(cpu=True)
    raise_on_every_process(accelerator, None)
    with pytest.raises(OutputWriteError, match="full"):
        raise_on_every_process(accelerator, OutputWriteError("full"))
