"""Crash-safe checkpoints: written to a hidden temporary folder, then renamed into place.

A checkpoint folder (`step_N` or `epoch_N`) holds accelerate's full state (model, optimizer,
scheduler, grad scaler, every process's RNG) plus `training_state.json` (where to resume and the
history so far) and `args.json` (the resolved configuration). A kill at any moment leaves either the
previous complete checkpoint or the new complete one: `find_latest_checkpoint` ignores temporary
folders and folders without `training_state.json`, which is written last.

A checkpoint is never written with non-finite weights (`NonFiniteWeightsError`), so every complete
checkpoint is one to resume from. A save that fails (a full disk, an I/O error) removes its partial folder,
keeps every earlier checkpoint, and raises `CheckpointWriteError` naming the checkpoint, the OS error and the
free space left, on every process.

Names and order. A checkpoint is `step_N` (N optimizer steps done) or `epoch_N`. Step numbers do not always grow
from one checkpoint to the next: a resume with a bigger global batch changes what a step is (4 -> 8 processes turn
step 3000 into step 1500), and a resume from an older checkpoint trains its steps again. Neither replaces a folder
that an earlier run (a start or a resume of train.py) wrote: the new checkpoint takes the name with a suffix,
`step_N-2` (then `-3`, ...; `checkpoint_name`). Every checkpoint records the order in which it was written into
the folder (`checkpoint_sequence` in training_state.json) and the run that wrote it (`run_id`): "latest" is the
last one written and retention keeps the newest written, whatever their step numbers (`write_order`). Checkpoints
from before the order was recorded count as older than every one that records it, and among themselves by the
samples they had trained.

With a `total_limit`, each save then deletes the oldest complete checkpoints beyond the limit (317 MB
each for the 64 px model with its optimizer state). A checkpoint to delete is first renamed to
`.trash-<name>`, atomically, and only then removed: a kill at any moment leaves every kept checkpoint
whole and the newest complete one where `--resume_from_checkpoint latest` finds it; what a kill leaves
half-deleted (or half-written) is a hidden folder that the next save clears away.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError

STATE_FILE = "training_state.json"
ARGS_FILE = "args.json"
# step_N / epoch_N, and the copies that a name an earlier run used takes: step_N-2, step_N-3, ...
_CHECKPOINT_NAME = re.compile(r"^(step|epoch)_(\d+)(-\d+)?$")
_BASE_NAME = re.compile(r"^(step|epoch)_(\d+)$")
SEQUENCE_KEY = "checkpoint_sequence"  # training_state.json: 1, 2, ... in the order written into the folder
RUN_ID_KEY = "run_id"  # training_state.json: the run (a start or a resume of train.py) that wrote it
# Below this, a failed write is put down to a full device (torch's writers report "basic_ios::clear" or
# "unexpected pos", without the OS error).
NEARLY_FULL_BYTES = 64 * 2**20


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (no space, I/O error); earlier checkpoints are kept."""


class OutputWriteError(CheckpointWriteError):
    """Another of the run's outputs (best/, the final model, history.json, all_results.json, the curves) could not
    be written (no space, I/O error): nothing half-written is left, and what was there before is kept."""


class NonFiniteWeightsError(RuntimeError):
    """The model's weights hold NaN or inf: no checkpoint or model is written from them."""


def check_finite_weights(model: torch.nn.Module, what: str, output_dir: str | os.PathLike) -> None:
    """Raise NonFiniteWeightsError (naming the tensors and the checkpoint to go back to) if any weight is NaN/inf."""
    parameters = dict(model.named_parameters())
    finite = torch.stack([p.detach().isfinite().all() for p in parameters.values()])  # one sync for all of them
    if bool(finite.all()):
        return
    bad = [name for name, ok in zip(parameters, finite.tolist()) if not ok]
    latest = find_latest_checkpoint(output_dir)
    back_to = f"the newest complete checkpoint, {latest.name}, holds finite weights" if latest else "there is none"
    raise NonFiniteWeightsError(
        f"not writing {what}: {len(bad)} weight tensors hold NaN or inf (e.g. {', '.join(bad[:3])}). In "
        f"{str(output_dir)!r} {back_to}: resume from it with --resume_from_checkpoint latest, with "
        "--resume_with_changes and a lower --learning_rate."
    )


def describe_write_error(error: BaseException, folder: str | os.PathLike) -> str:
    """The OS error behind a failed write, and the free space left on the folder's device."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    code = getattr(error, "errno", None)
    if code == errno.ENOSPC or (free is not None and free < NEARLY_FULL_BYTES and code is None):
        reason = os.strerror(errno.ENOSPC)
    elif code:
        reason = os.strerror(code)
    else:
        reason = "I/O error"
    space = f"{free / 2**20:.1f} MiB free on its device" if free is not None else "free space unknown"
    return f"{reason} ({space}; {type(error).__name__}: {error})"


def ensure_free_space(folder: str | os.PathLike, needed_bytes: int, what: str) -> None:
    """Raise CheckpointWriteError before a run starts if `folder`'s device cannot hold `what` (`needed_bytes`)."""
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise CheckpointWriteError(
            f"{os.strerror(errno.ENOSPC)} for {what} in {str(folder)!r}: {free / 2**20:.1f} MiB free, it takes "
            f"about {needed_bytes / 2**20:.1f} MiB. Free space there, lower --checkpoints_total_limit, or choose "
            "another --output_dir."
        )


def folder_bytes(folder: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    name: str,
    state: dict,
    args: dict,
    total_limit: int | None = None,
    model: torch.nn.Module | None = None,
) -> Path:
    """Save the full training state atomically to output_dir/name (or the name `checkpoint_name` gives when an
    earlier run's checkpoint holds that one), then keep at most `total_limit` checkpoints (the newest written; None
    keeps all). Call on every process. With `model`, its weights must be finite. `state[RUN_ID_KEY]` names the run
    that writes it (without it, no existing folder is replaced). Returns the checkpoint's folder."""
    output_dir = Path(output_dir)
    if model is not None:
        check_finite_weights(model, f"checkpoint {output_dir / name}", output_dir)
    sequence = None
    if accelerator.is_main_process:
        name, sequence = place_checkpoint(output_dir, name, state.get(RUN_ID_KEY))
        shutil.rmtree(output_dir / f".tmp-{name}", ignore_errors=True)
    if accelerator.num_processes > 1:  # every process writes into the folder the main process named (a barrier too)
        name = broadcast_object_list([name])[0]
    final, temporary = output_dir / name, output_dir / f".tmp-{name}"
    failure = None
    try:
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            (temporary / ARGS_FILE).write_text(json.dumps(args, indent=2, sort_keys=True))
            write_json_atomically(temporary / STATE_FILE, {**state, SEQUENCE_KEY: sequence})
    except Exception as error:  # OSError, torch's RuntimeError, safetensors' SafetensorError: any failed write
        failure = error
    # every process learns whether any failed (a collective: no process is left waiting for the others)
    flag = torch.tensor([0.0 if failure is None else 1.0], device=accelerator.device)
    if accelerator.reduce(flag, reduction="sum").item() > 0:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        detail = describe_write_error(failure, output_dir) if failure is not None else "failed on another process"
        kept = [folder.name for _, folder in complete_checkpoints(output_dir)]
        raise CheckpointWriteError(
            f"could not write checkpoint {str(final)!r}: {detail}. Its partial folder is removed; the checkpoints "
            f"already there are kept ({', '.join(kept) or 'none'})."
        ) from failure
    if accelerator.is_main_process:
        replace_folder(temporary, final)
        if total_limit is not None:
            prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final


def checkpoint_name(base: str, taken: dict[str, str | None], run_id: str | None) -> str:
    """The folder name for the checkpoint a run calls `base` (step_N or epoch_N): `base`, unless another run's
    checkpoint holds it; then the first of `base-2`, `base-3`, ... that is free or this run's own.

    `taken` maps the checkpoint folders in the output folder to the run that wrote each (None: not known, a
    checkpoint from before runs were recorded or a folder without training_state.json). A run replaces only its
    own folders (the same step written again, as a signal during evaluation does); `run_id` None replaces none."""
    if not _BASE_NAME.match(base):
        raise ValueError(f"a checkpoint is named step_N or epoch_N (N a number of steps or epochs), got {base!r}.")
    name, copy = base, 1
    while name in taken and (run_id is None or taken[name] != run_id):
        copy += 1
        name = f"{base}-{copy}"
    return name


def write_order(state: dict, recorded_args: dict) -> tuple:
    """Sort key of a checkpoint (its training_state.json and args.json) by when it was written into its folder:
    its `checkpoint_sequence`. One written before sequences were recorded sorts before every one with a sequence,
    and among those by the samples it had trained (steps x its global batch: a step's meaning changes when a
    resume changes the batch), then by steps."""
    if SEQUENCE_KEY in state:
        return (1, state[SEQUENCE_KEY], 0)
    steps = state["completed_steps"]
    return (0, steps * recorded_args.get("global_batch_size", 1), steps)


def _checkpoint_folders(output_dir: Path) -> list[tuple[Path, dict | None]]:
    """(folder, its training state or None if it has none) for every folder named like a checkpoint."""
    if not output_dir.is_dir():
        return []
    found = []
    for candidate in output_dir.iterdir():
        if not (candidate.is_dir() and _CHECKPOINT_NAME.match(candidate.name)):
            continue
        try:
            found.append((candidate, json.loads((candidate / STATE_FILE).read_text())))
        except FileNotFoundError:  # being written or deleted (by the main process, while another one looks)
            found.append((candidate, None))
    return found


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(optimizer steps, folder) of every complete checkpoint (step_N, epoch_N and their copies step_N-2, ...) in
    the order they were written into output_dir (`write_order`), oldest first."""
    found = []
    for folder, state in _checkpoint_folders(Path(output_dir)):
        if state is None:
            continue
        recorded = {}
        if SEQUENCE_KEY not in state and (folder / ARGS_FILE).exists():
            recorded = json.loads((folder / ARGS_FILE).read_text())
        found.append((write_order(state, recorded), folder.name, state["completed_steps"], folder))
    found.sort(key=lambda item: item[:2])
    return [(steps, folder) for _, _, steps, folder in found]


def place_checkpoint(output_dir: str | os.PathLike, base: str, run_id: str | None) -> tuple[str, int]:
    """Main process, before a save: the new checkpoint's folder name (`checkpoint_name`) and its place in the write
    order (one after the last written of the complete checkpoints in output_dir)."""
    folders = _checkpoint_folders(Path(output_dir))
    taken = {folder.name: state.get(RUN_ID_KEY) if state else None for folder, state in folders}
    sequence = 1 + max((state.get(SEQUENCE_KEY, 0) for _, state in folders if state), default=0)
    return checkpoint_name(base, taken, run_id), sequence


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int) -> list[str]:
    """Delete the oldest complete checkpoints beyond `total_limit`, and what interrupted saves and deletions left.

    Main process only, between saves. Returns the names of the checkpoints deleted.
    """
    if total_limit < 1:
        raise ValueError(f"total_limit must be at least 1, got {total_limit}.")
    output_dir = Path(output_dir)
    doomed = [folder for _, folder in complete_checkpoints(output_dir)[:-total_limit]]
    for folder in doomed:
        folder.rename(folder.with_name(f".trash-{folder.name}"))  # atomic: no longer a checkpoint from here on
    for leftover in output_dir.iterdir():
        hidden, _, name = leftover.name.partition("-")
        if hidden in (".trash", ".tmp", ".stale") and _CHECKPOINT_NAME.match(name) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    return [folder.name for folder in doomed]


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux's renameat2 with RENAME_EXCHANGE). False where the
    system or its file system cannot (other systems, old kernels, NFS): nothing was changed then."""
    if sys.platform != "linux":
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_current_directory, rename_exchange = -100, 2
    if renameat2(at_current_directory, os.fsencode(first), at_current_directory, os.fsencode(second), rename_exchange):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(code, os.strerror(code), str(first), None, str(second))
    return True


def replace_folder(temporary: Path, final: Path) -> None:
    """Move a fully written folder into place. An existing `final` is exchanged with it in one atomic step where
    the system can (`exchange_paths`), then removed; elsewhere it is renamed aside first and removed only after
    the new one is in place. Either way a kill at any point leaves a complete folder, never a mix of two."""
    if final.exists() and exchange_paths(temporary, final):
        shutil.rmtree(temporary, ignore_errors=True)  # the old folder, now under the temporary name
    elif final.exists():
        stale = final.with_name(f".stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        temporary.rename(final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        temporary.rename(final)


# What a failed write raises: the OS's error, torch's writers' RuntimeError, safetensors' SafetensorError.
WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_failed(what: str, path: Path, error: BaseException) -> OutputWriteError:
    return OutputWriteError(
        f"could not write {what} {str(path)!r}: {describe_write_error(error, path.parent)}. Nothing of it is left "
        f"half-written; what was in {path.name} before, if anything, is kept."
    )


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], what: str) -> None:
    """`write(temporary)` writes a file or a folder at a hidden temporary path beside `path` (`.tmp-<name>`: the
    suffix stays, for writers that read the format from it); it then replaces `path` in one step. A failure (a full
    disk, an I/O error) removes the temporary and raises OutputWriteError naming `what`, the path, the OS error
    and the free space left."""
    path = Path(path)
    temporary = path.with_name(f".tmp-{path.name}")
    _remove(temporary)
    try:
        write(temporary)
        if temporary.is_dir():
            replace_folder(temporary, path)
        else:
            os.replace(temporary, path)
    except WRITE_ERRORS as error:
        _remove(temporary)
        raise _write_failed(what, path, error) from error


def write_json_output(path: str | os.PathLike, payload, what: str) -> None:
    """A JSON file of the run's outputs, written as `write_atomically` writes."""
    text = json.dumps(payload, indent=2, sort_keys=True)
    write_atomically(path, lambda temporary: temporary.write_text(text), what)


FINAL_FOLDER = "final"


def write_model_in_place(output_dir: str | os.PathLike, write: Callable[[Path], None], what: str) -> None:
    """The final model, loadable from output_dir itself and replaced atomically.

    `write(temporary)` writes the model's folder; it becomes `output_dir/final` (`replace_folder`: one atomic
    exchange with the previous one), and output_dir holds a relative link `name -> final/name` for each of its
    files, so `from_pretrained(output_dir)` and `from_pretrained(output_dir / "final")` both load it. The links
    are made before the swap and then never change: at every moment, and after a kill at any point, output_dir
    shows the files of one model, the old one or the new one. (Files written into output_dir one by one, as
    before, were moved in one rename at a time: a kill between two left a mix of two models.) A link to a file
    only the old model had is removed after the swap. The one step that is not atomic is the first write into
    a folder where an older train.py left the model's files themselves: they become links one at a time, and
    until the swap, those already replaced point at a final/ that is not there yet (missing, never mixed).

    A failure raises OutputWriteError as `write_atomically` does; the previous model, if any, stays whole."""
    output_dir = Path(output_dir)
    folder = output_dir / FINAL_FOLDER
    temporary = output_dir / f".tmp-{FINAL_FOLDER}"
    _remove(temporary)
    staged = None
    try:
        write(temporary)
        for name in sorted(p.name for p in temporary.iterdir()):
            link, target = output_dir / name, f"{FINAL_FOLDER}/{name}"
            if link.is_symlink() and os.readlink(link) == target:
                continue
            staged = output_dir / f".tmp-link-{name}"
            staged.unlink(missing_ok=True)
            os.symlink(target, staged)
            os.replace(staged, link)
            staged = None
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            folder.unlink()
        replace_folder(temporary, folder)
    except WRITE_ERRORS as error:
        _remove(temporary)
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise _write_failed(what, folder, error) from error
    for link in output_dir.iterdir():
        if link.is_symlink() and os.readlink(link).startswith(f"{FINAL_FOLDER}/") and not link.exists():
            link.unlink()


def raise_on_every_process(accelerator: Accelerator, failure: OutputWriteError | None) -> None:
    """After a write by the main process alone: every process learns whether it failed (a collective, so call it
    on all of them at the same point) and raises it, so that none is left waiting for the others."""
    message = str(failure) if failure is not None else None
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        message = broadcast_object_list([message], from_process=0)[0]
    if failure is not None:
        raise failure
    if message is not None:
        raise OutputWriteError(message)


def write_json_atomically(path: Path, payload) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(temporary, path)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint written last into output_dir, or None."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str | os.PathLike) -> Path:
    """A path, or "latest" (the complete checkpoint written last into output_dir). Raises ValueError if none."""
    if resume_from_checkpoint == "latest":
        latest = find_latest_checkpoint(output_dir)
        if latest is None:
            raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint in {str(output_dir)!r}.")
        return latest
    path = Path(resume_from_checkpoint)
    if not (path / STATE_FILE).exists():
        raise ValueError(f"--resume_from_checkpoint {str(path)!r} is not a complete checkpoint (no {STATE_FILE}).")
    return path


def load_training_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())
