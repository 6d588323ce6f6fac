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

With a `total_limit`, each save then deletes the oldest complete checkpoints beyond the limit (317 MB
each for the 64 px model with its optimizer state). A checkpoint to delete is first renamed to
`.trash-<name>`, atomically, and only then removed: a kill at any moment leaves every kept checkpoint
whole and the newest complete one where `--resume_from_checkpoint latest` finds it; what a kill leaves
half-deleted (or half-written) is a hidden folder that the next save clears away.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

STATE_FILE = "training_state.json"
ARGS_FILE = "args.json"
_CHECKPOINT_NAME = re.compile(r"^(step|epoch)_(\d+)$")
# Below this, a failed write is put down to a full device (torch's writers report "basic_ios::clear" or
# "unexpected pos", without the OS error).
NEARLY_FULL_BYTES = 64 * 2**20


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (no space, I/O error); earlier checkpoints are kept."""


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
    """Save the full training state to output_dir/name atomically, then keep at most `total_limit` checkpoints
    (the newest; None keeps all). Call on every process. With `model`, its weights must be finite."""
    output_dir = Path(output_dir)
    final, temporary = output_dir / name, output_dir / f".tmp-{name}"
    if model is not None:
        check_finite_weights(model, f"checkpoint {final}", output_dir)
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    failure = None
    try:
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            (temporary / ARGS_FILE).write_text(json.dumps(args, indent=2, sort_keys=True))
            write_json_atomically(temporary / STATE_FILE, state)
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


def complete_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(optimizer steps, folder) of every complete step_N / epoch_N checkpoint, oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [
        (json.loads((candidate / STATE_FILE).read_text())["completed_steps"], candidate)
        for candidate in folder.iterdir()
        if candidate.is_dir() and _CHECKPOINT_NAME.match(candidate.name) and (candidate / STATE_FILE).exists()
    ]
    return sorted(found, key=lambda item: (item[0], item[1].name))


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


def replace_folder(temporary: Path, final: Path) -> None:
    """Move a fully written folder into place. An existing `final` is renamed aside first and removed
    only after the new one is in place, so a kill at any point leaves a complete folder behind."""
    if final.exists():
        stale = final.with_name(f".stale-{final.name}")
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        temporary.rename(final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        temporary.rename(final)


def write_json_atomically(path: Path, payload) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(temporary, path)


def find_latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the most optimizer steps in output_dir, or None."""
    checkpoints = complete_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_checkpoint(resume_from_checkpoint: str, output_dir: str | os.PathLike) -> Path:
    """A path, or "latest" (the newest complete checkpoint in output_dir). Raises ValueError if there is none."""
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
