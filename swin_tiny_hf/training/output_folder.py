"""One run per output folder, and no run that silently mixes its files with another's.

- A lock: the main process holds an exclusive `flock` on `<output_dir>/.run.lock` for its whole life. The
  kernel drops it when the process ends, however it ends (SIGKILL included), so a killed run never leaves the
  folder locked. The file names the holder (host, pid, start, command) for the refusal message. A run that ends
  removes the file while it still holds the lock; a run that opened the file just before then locks a file that
  no path names, so after its `flock` a run checks that the path still names the file it locked, and else
  starts again with the file the path names now: at no moment do two runs hold the folder.
- A non-empty folder is refused unless the run resumes (`--resume_from_checkpoint`) or is told to replace it
  (`--overwrite_output_dir`), and nothing in it is touched before that decision.

`flock` needs a file system that supports it (local disks, Lustre and NFSv4 with locking do).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from accelerate.utils import broadcast_object_list

LOCK_FILE = ".run.lock"
_HELD: dict[str, int] = {}  # folder -> open descriptor holding its lock, for the life of the process


def _close_held_locks_in_child() -> None:
    """A forked child (a data-loader worker) inherits the lock's descriptor, and a `flock` lasts while any copy is
    open: a worker that outlives a killed run would keep its folder locked. The child closes its copies (the
    parent's lock stays) and holds no lock of its own."""
    for descriptor in _HELD.values():
        try:
            os.close(descriptor)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


class OutputFolderError(RuntimeError):
    """The output folder is in use by another run, or holds a run's files that this run would overwrite."""


def lock_output_folder(folder: str | os.PathLike) -> None:
    """Take the folder's run lock (creating the folder), or raise OutputFolderError naming the run that holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if str(folder.resolve()) in _HELD:
        return
    while True:
        descriptor = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 4096).decode(errors="replace").strip() or "(unknown)"
            os.close(descriptor)
            raise OutputFolderError(
                f"--output_dir {str(folder)!r} is in use by another run: {holder}. Wait for it to end, stop it, or "
                "choose another --output_dir."
            ) from None
        if _names(folder / LOCK_FILE, descriptor):
            break
        os.close(descriptor)  # the run that held it removed the file as it ended: lock the one there now
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    holder["command"] = " ".join(sys.argv)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)
    _HELD[str(folder.resolve())] = descriptor


def _names(path: Path, descriptor: int) -> bool:
    """Whether `path` names the open file `descriptor` (and not a newer file, or none)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def release_output_folder(folder: str | os.PathLike) -> None:
    """At the end of a run: remove the lock file, then drop the lock (a killed run leaves an unlocked file). The
    removal comes first, while the lock is held: a run waiting on this file finds it gone and retries."""
    descriptor = _HELD.pop(str(Path(folder).resolve()), None)
    if descriptor is not None:
        (Path(folder) / LOCK_FILE).unlink(missing_ok=True)
        os.close(descriptor)


def prepare_output_folder(
    folder: str | os.PathLike,
    resuming: bool,
    overwrite: bool,
    inputs: dict[str, str | os.PathLike] | None = None,
    can_resume: bool = True,
) -> list[str]:
    """Refuse a folder that holds another run's files unless resuming or overwriting; with overwrite (and not
    resuming), delete them. Returns the names it deleted. Call with the folder's lock held.

    `inputs`: {flag: path} the run reads (its starting model, its data); overwriting a folder that holds one of them
    is refused before anything is deleted. `can_resume` False (an evaluation): the refusal does not offer a resume."""
    folder = Path(folder)
    # the names a user knows first, hidden leftovers (a killed run's temporary folders) last
    contents = sorted((p.name for p in folder.iterdir() if p.name != LOCK_FILE), key=lambda n: (n[0] == ".", n))
    if not contents or resuming:
        return []
    if not overwrite:
        shown = ", ".join(contents[:8]) + (f" and {len(contents) - 8} more" if len(contents) > 8 else "")
        resume = "Resume the run in it with --resume_from_checkpoint latest, replace" if can_resume else "Replace"
        raise OutputFolderError(
            f"--output_dir {str(folder)!r} is not empty ({shown}): a new run would overwrite those files. {resume} "
            "it with --overwrite_output_dir, or choose another --output_dir."
        )
    inside = folder.resolve()
    for flag, path in (inputs or {}).items():
        if path is not None and os.path.exists(path) and Path(path).resolve().is_relative_to(inside):
            raise OutputFolderError(
                f"--overwrite_output_dir would delete {flag} {str(path)!r}, which this run reads: it lies inside "
                f"--output_dir {str(folder)!r}. Copy it elsewhere first, or choose another --output_dir."
            )
    for name in contents:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return contents


def claim_output_folder(
    accelerator,
    folder: str | os.PathLike,
    resuming: bool,
    overwrite: bool,
    inputs: dict[str, str | os.PathLike | None],
    can_resume: bool = True,
) -> list[str]:
    """A run's claim on its folder, on every process: the main process locks it and prepares it
    (`prepare_output_folder`); every process gets the verdict, so all stop together on a refusal
    (OutputFolderError). Returns the names --overwrite_output_dir deleted (on the main process)."""
    error, removed = None, []
    if accelerator.is_main_process:
        try:
            lock_output_folder(folder)
            removed = prepare_output_folder(folder, resuming, overwrite, inputs, can_resume)
        except OutputFolderError as refused:
            error = str(refused)
    error = broadcast_object_list([error])[0] if accelerator.num_processes > 1 else error
    if error:
        raise OutputFolderError(error)
    return removed
