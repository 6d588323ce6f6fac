"""The output folder's run lock and the non-empty-folder rule, on their own (train.py's use: test_train*.py).

`flock` locks belong to an open file description, so two descriptors of one process conflict as two processes'
would; the other runs here are real processes all the same, since what a run holds dies with it."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from swin_tiny_hf.training import output_folder
from swin_tiny_hf.training.output_folder import (
    LOCK_FILE,
    OutputFolderError,
    claim_output_folder,
    lock_output_folder,
    prepare_output_folder,
    release_output_folder,
)

ROOT = Path(__file__).resolve().parent.parent
# The module alone (standard library only), without the package's torch import: each other run starts in 0.1 s.
LOAD = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("output_folder", {str(Path(output_folder.__file__))!r})
output_folder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(output_folder)
"""
# Another run: takes the lock, says so, and on each line from stdin goes one stage further (release, exit).
HOLDER = f"""{LOAD}
output_folder.lock_output_folder(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
output_folder.release_output_folder(sys.argv[1])
print("released", flush=True)
sys.stdin.readline()
"""
# A third run: tries the lock once and says what it got.
CONTENDER = f"""{LOAD}
try:
    output_folder.lock_output_folder(sys.argv[1])
    print("locked")
except output_folder.OutputFolderError as error:
    print("refused:", error)
"""


def python(script: str, *arguments: str, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-c", script, *arguments], cwd=ROOT, text=True, stdout=subprocess.PIPE, **kwargs
    )


def contend(folder: Path) -> str:
    contender = python(CONTENDER, str(folder))
    return contender.communicate(timeout=60)[0].strip()


@pytest.fixture
def released(tmp_path):
    """Whatever a test locks in this process is released at its end (the lock table is per process)."""
    yield tmp_path
    for folder in list(output_folder._HELD):
        release_output_folder(folder)


def test_a_held_folder_is_refused_naming_the_holder_and_free_again_after_release(released):
    folder = released / "run"
    lock_output_folder(folder)
    lock_output_folder(folder)  # the holder asking again: already its own
    holder = json.loads((folder / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"]
    refused = contend(folder)
    assert refused.startswith(f"refused: --output_dir '{folder}' is in use by another run: {{") and (
        f'"pid": {os.getpid()}' in refused and "choose another --output_dir" in refused
    )
    release_output_folder(folder)
    assert not (folder / LOCK_FILE).exists()
    assert contend(folder) == "locked"  # and that run's lock died with it


def test_a_lock_file_left_by_a_killed_run_is_not_locked(released):
    folder = released / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text('{"pid": 1}')  # what a SIGKILL leaves: the file, no lock
    lock_output_folder(folder)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_run_that_opened_the_lock_file_before_its_holder_removed_it_does_not_lock_a_deleted_file(
    released, monkeypatch
):
    """The holder ends (unlink, then close) between this run's open and its flock. That flock succeeds, on an inode
    no path names any more: without a check, this run and a third one that creates a new lock file both hold
    the folder. The check (the path still names the locked file, else retry) leaves one holder."""
    folder = released / "run"
    holder = python(HOLDER, str(folder), stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == "locked\n"
        real_flock = fcntl.flock

        def holder_ends_first(descriptor, operation):
            if holder.poll() is None and holder.stdin and not holder.stdin.closed:
                holder.stdin.write("\n")
                holder.stdin.flush()
                assert holder.stdout.readline() == "released\n"
                holder.stdin.close()
                holder.wait(timeout=60)
            return real_flock(descriptor, operation)

        monkeypatch.setattr(output_folder.fcntl, "flock", holder_ends_first)
        lock_output_folder(folder)
        monkeypatch.setattr(output_folder.fcntl, "flock", real_flock)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert (folder / LOCK_FILE).exists() and json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    refused = contend(folder)
    assert refused.startswith("refused:") and f'"pid": {os.getpid()}' in refused


def test_a_folder_with_files_is_refused_untouched_unless_resuming_or_overwriting(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    assert prepare_output_folder(folder, resuming=False, overwrite=False) == []  # empty: nothing to say
    (folder / LOCK_FILE).write_text("")
    assert prepare_output_folder(folder, resuming=False, overwrite=False) == []  # the lock alone is not a run
    names = ["history.json", "model.safetensors", "step_2", ".tmp-final", "config.json"]
    for name in names:
        if name.startswith(("step_", ".tmp")):
            (folder / name).mkdir()
            (folder / name / "inside").write_text("x")
        else:
            (folder / name).write_text("x")
    (folder / "link.json").symlink_to(tmp_path / "outside.json")
    (tmp_path / "outside.json").write_text("kept")
    with pytest.raises(OutputFolderError) as refused:
        prepare_output_folder(folder, resuming=False, overwrite=False)
    # the visible names first (what the user knows), hidden leftovers last
    assert (
        f"--output_dir '{folder}' is not empty (config.json, history.json, link.json, model.safetensors, step_2, "
        ".tmp-final): a new run would overwrite those files" in str(refused.value)
    )
    assert prepare_output_folder(folder, resuming=True, overwrite=True) == []  # a resume keeps everything
    assert len(list(folder.iterdir())) == 7
    deleted = prepare_output_folder(folder, resuming=False, overwrite=True)
    assert deleted == ["config.json", "history.json", "link.json", "model.safetensors", "step_2", ".tmp-final"]
    assert [p.name for p in folder.iterdir()] == [LOCK_FILE]
    assert (tmp_path / "outside.json").read_text() == "kept"  # a link is removed, never followed


def test_a_long_listing_is_cut_to_eight_names(tmp_path):
    for number in range(11):
        (tmp_path / f"file_{number:02d}").write_text("x")
    with pytest.raises(OutputFolderError, match=r"\(file_00, .*, file_07 and 3 more\)"):
        prepare_output_folder(tmp_path, resuming=False, overwrite=False)


def test_a_forked_child_does_not_keep_the_folder_locked(tmp_path):
    """A data-loader worker is a fork of the run: when the run ends (or is killed) while the worker lives on for a
    moment, the folder must be free at once."""
    import fcntl
    import signal

    from swin_tiny_hf.training import output_folder

    output_folder.lock_output_folder(tmp_path)
    ready, said = os.pipe()
    child = os.fork()
    if child == 0:  # the worker (its fork handlers have run by now): lives on after its parent lets go
        os.write(said, b"up")
        signal.pause()
        os._exit(0)
    os.read(ready, 2)
    try:
        descriptor = output_folder._HELD.pop(str(tmp_path.resolve()))
        os.close(descriptor)  # the run's end (or its death): its own copy closed, the file left in place
        other = os.open(tmp_path / output_folder.LOCK_FILE, os.O_RDWR)
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free, though the child still lives
        finally:
            os.close(other)
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


class OneProcess:
    """What claim_output_folder reads off the accelerator, for a run of one process."""

    is_main_process, num_processes = True, 1


def test_a_claim_locks_the_folder_and_refuses_or_replaces_what_another_run_left(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "history.json").write_text("[]")
    try:
        with pytest.raises(OutputFolderError, match="is not empty \\(history.json\\)"):
            claim_output_folder(OneProcess, folder, resuming=False, overwrite=False, inputs={})
        assert (folder / "history.json").exists()  # refused: nothing touched
        release_output_folder(folder)
        assert claim_output_folder(OneProcess, folder, resuming=True, overwrite=False, inputs={}) == []
        release_output_folder(folder)
        removed = claim_output_folder(OneProcess, folder, resuming=False, overwrite=True, inputs={})
        assert removed == ["history.json"] and [p.name for p in folder.iterdir()] == [".run.lock"]
    finally:
        release_output_folder(folder)
