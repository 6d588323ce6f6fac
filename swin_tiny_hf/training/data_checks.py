"""Checks of the data before training, and the record of bad images met during it.

Before the first step (`check_data`):
- sizes: the training split against one global batch, an empty validation split;
- every row's image cell, from the Arrow table only (no decoding): None, no bytes and no path, an empty
  file, a file that is gone;
- every validation image decoded (split over the processes): a bad one would otherwise stop the run at
  the end of the first epoch;
- label coverage: a validation class with no training image is warned about.
Bad rows stop the run with a `BadImageError` naming them, or with `--skip_bad_images` are dropped, logged
and reported in all_results.json. A training image that fails to decode later is skipped by the training
transform and counted (`SkippedImages`), per epoch and in all_results.json.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.compute as pc
from accelerate.utils import gather_object
from datasets import Dataset, DatasetDict

from .data import BadImageError, SplitSource, column_array, decode_rgb

logger = logging.getLogger(__name__)
LISTED = 5  # bad rows named in a message; all_results.json keeps up to REPORTED
REPORTED = 100


def missing_images(split: Dataset) -> dict[int, str]:
    """{row: what is wrong} for rows whose image is None, has neither bytes nor a path, or names an empty or
    missing file. Reads the Arrow table's validity and lengths (vectorised) and stats files; decodes nothing."""
    table = split.data.table
    positions = None if split._indices is None else split._indices.column(0).to_numpy()
    found: dict[int, str] = {}
    offset = 0
    rows_all = table.column("row").to_numpy()
    for chunk in table.column("image").chunks:  # StructArray {bytes: binary, path: string}
        none = chunk.is_null().to_numpy(zero_copy_only=False)
        lengths = pc.fill_null(pc.binary_length(chunk.field("bytes")), -1).to_numpy(zero_copy_only=False)
        paths = chunk.field("path")
        no_path = pc.fill_null(pc.equal(pc.utf8_length(paths), 0), True).to_numpy(zero_copy_only=False)
        for index in np.flatnonzero(none):
            found[offset + int(index)] = "the row has no image (None)"
        for index in np.flatnonzero(~none & (lengths == 0)):
            found[offset + int(index)] = "the image has no bytes (an empty file)"
        for index in np.flatnonzero(~none & (lengths < 0) & no_path):
            found[offset + int(index)] = "the image has neither bytes nor a path"
        for index in np.flatnonzero(~none & (lengths < 0) & ~no_path):  # a file on disk (image folders)
            path = paths[int(index)].as_py()
            try:
                if os.path.getsize(path) == 0:
                    found[offset + int(index)] = f"the file {path!r} is empty"
            except OSError as error:
                found[offset + int(index)] = f"the file {path!r} cannot be read: {error.strerror or error}"
        offset += len(chunk)
    if positions is not None:  # only the rows of this selection
        selected = set(positions.tolist())
        found = {position: problem for position, problem in found.items() if position in selected}
    return {int(rows_all[position]): problem for position, problem in found.items()}


def undecodable_images(
    split: Dataset, source: SplitSource, process_index: int = 0, num_processes: int = 1, threads: int | None = None
) -> dict[int, str]:
    """{row: error} for the images of this process's share of the split (every num_processes-th row) that
    cannot be decoded, decoding in threads (the decoders release the GIL)."""
    share = split.select(range(process_index, len(split), num_processes)) if num_processes > 1 else split
    threads = threads or min(8, os.cpu_count() or 1)

    def check(cell_and_row):
        cell, row = cell_and_row
        try:
            decode_rgb(cell, source.split, row, source)
            return None
        except BadImageError as error:
            return row, str(error)

    found = {}
    batches = share.select_columns(["image", "row"]).iter(batch_size=1024)
    if threads == 1:
        results = (check(pair) for batch in batches for pair in zip(batch["image"], batch["row"]))
        found = dict(result for result in results if result is not None)
        return found
    with ThreadPoolExecutor(threads) as pool:
        for batch in batches:
            for result in pool.map(check, zip(batch["image"], batch["row"])):
                if result is not None:
                    found[result[0]] = result[1]
    return found


def gather_dict(found: dict[int, str]) -> dict[int, str]:
    """The union over processes of {row: message} (a collective where there are several)."""
    merged = {}
    for part in gather_object([found]):
        merged.update(part)
    return merged


def check_split_sizes(
    train_rows: int, validation_rows: int, per_device_batch: int, num_processes: int, dropped: int
) -> None:
    """The training split must fill one global batch (the loader drops an incomplete last batch, so a smaller
    split would train for 0 steps); the validation split must not be empty."""
    global_batch = per_device_batch * num_processes
    after = " after --max_train_samples" + (f" and dropping {dropped} bad images" if dropped else "")
    if train_rows < global_batch:
        raise ValueError(
            f"split 'train' has {train_rows} rows{after}, fewer than one global batch of {global_batch} "
            f"(--per_device_train_batch_size {per_device_batch} x {num_processes} processes): the loader drops an "
            "incomplete batch, so no optimizer step would run. Lower --per_device_train_batch_size or use more data."
        )
    if validation_rows == 0:
        raise ValueError(
            "split 'validation' has no rows (after --max_eval_samples and dropping bad images): every epoch ends "
            "with an evaluation. Give a validation split with images, or --validation_fraction."
        )


def warn_uncovered_classes(dataset: DatasetDict) -> list[str]:
    """Warn about validation classes with no training image (image folders merge the class lists of their
    splits; --max_train_samples can leave a class out): the model cannot learn them. Returns their names."""
    names = dataset["train"].features["label"].names
    in_train = np.bincount(column_array(dataset["train"], "label"), minlength=len(names))
    in_validation = np.bincount(column_array(dataset["validation"], "label"), minlength=len(names))
    uncovered = [names[i] for i in np.flatnonzero((in_validation > 0) & (in_train == 0))]
    if uncovered:
        rows = int(in_validation[[names.index(n) for n in uncovered]].sum())
        logger.warning(
            "%d validation classes have no training image: %s (%d validation rows). The model cannot learn them, "
            "and they count as errors in the validation accuracy.",
            len(uncovered),
            ", ".join(uncovered[:LISTED]) + (", ..." if len(uncovered) > LISTED else ""),
            rows,
        )
    return uncovered


def bad_rows_message(split_name: str, found: dict[int, str]) -> str:
    """found: {row: a message naming the split, row and file or shard}."""
    listed = "; ".join(found[row] for row in sorted(found)[:LISTED])
    more = f" (and {len(found) - LISTED} more)" if len(found) > LISTED else ""
    return f"{len(found)} bad images in split {split_name!r}: {listed}{more}"


def drop_rows(split: Dataset, rows: set[int]) -> Dataset:
    """The split without the rows whose "row" is in `rows`."""
    if not rows:
        return split
    keep = np.flatnonzero(~np.isin(column_array(split, "row"), list(rows)))
    return split.select(keep)


def check_data(
    dataset: DatasetDict,
    sources: dict[str, SplitSource],
    skip_bad_images: bool,
    per_device_batch: int,
    process_index: int = 0,
    num_processes: int = 1,
    training: bool = True,
) -> tuple[DatasetDict, list[dict]]:
    """The checks of the module docstring. Returns the dataset (bad rows dropped with skip_bad_images) and the
    bad images found, [{"split", "row", "error", "dropped_from"}] ("split" as the dataset names it, "dropped_from"
    "train" or "validation"); raises BadImageError (without skip_bad_images) or
    ValueError (sizes) naming the split, the rows and the flag. `training` False (evaluation only): the
    validation split alone is checked."""
    bad: list[dict] = []
    dropped = {"train": 0, "validation": 0}
    for name in ("train", "validation") if training else ("validation",):
        split, source = dataset[name], sources[name]
        found = {
            row: f"could not decode the image of {source.describe(row)}: {problem}"
            for row, problem in missing_images(split).items()
        }
        if name == "validation":
            found.update(gather_dict(undecodable_images(split, source, process_index, num_processes)))
        if not found:
            continue
        message = bad_rows_message(source.split, found)
        if not skip_bad_images:
            raise BadImageError(f"{message}. Fix or remove them, or pass --skip_bad_images to train without them.")
        if process_index == 0:  # every process finds the same rows: one warning, not one per process
            logger.warning("--skip_bad_images: dropping %s", message)
        dataset[name] = drop_rows(split, set(found))
        dropped[name] = len(found)
        bad += [
            {"split": source.split, "row": row, "error": found[row], "dropped_from": name} for row in sorted(found)
        ]
    check_split_sizes(
        len(dataset["train"]) if training else per_device_batch * num_processes,
        len(dataset["validation"]),
        per_device_batch,
        num_processes,
        dropped["train"],
    )
    if training and process_index == 0:  # the same classes on every process: one warning
        warn_uncovered_classes(dataset)
    return dataset, bad


class SkippedImages:
    """Training images that failed to decode in this epoch (--skip_bad_images), for the history and the report.

    Each process records the batches it loads; `merged` gathers them (a collective) for a checkpoint or the
    epoch's end. After a resume, the main process starts from the checkpoint's list, the others from none,
    so the epoch's total is the uninterrupted run's."""

    def __init__(self, restored: list[dict] | None = None):
        self.entries = list(restored or [])

    def add(self, skipped) -> None:
        for row, message in skipped:
            logger.warning("--skip_bad_images: skipped %s", message)
            self.entries.append({"row": int(row), "error": message})

    def merged(self) -> list[dict]:
        entries = [entry for part in gather_object([self.entries]) for entry in part]
        return sorted(entries, key=lambda entry: entry["row"])


def record_bad_images(report: list[dict], entries: list[dict]) -> list[dict]:
    """The run's list of bad images ({"split", "row", "error"}), each (split, row) once, at most REPORTED."""
    seen = {(entry["split"], entry["row"]) for entry in report}
    for entry in entries:
        if (entry["split"], entry["row"]) not in seen and len(report) < REPORTED:
            report.append(entry)
            seen.add((entry["split"], entry["row"]))
    return report
