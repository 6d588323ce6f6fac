"""The start-up cost of the data checks at Tiny ImageNet's scale (`swin_tiny_hf.training.data_checks`).

    python benchmarks/data_checks_cost.py [--dataset_dir DIR] [--repeats 3]

Writes (once) the generated 100,000 + 10,000-image dataset in the Hub layout (as full_scale_rehearsal.py
does), loads it as train.py does (warm `datasets` cache), and times each check, best of --repeats:
- the parquet footers read for per-split class names and shard row spans;
- the image-cell scan (None, no bytes, empty or missing files) of both splits, from the Arrow table;
- decoding every validation image (threads: one per core, at most 8);
- label coverage; and `check_data` as train.py calls it (all of the above).
Prints a Markdown table of seconds, with the CPU named.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from swin_tiny_hf.training import synthetic_dataset
from swin_tiny_hf.training.data import _parquet_files, load_image_dataset, read_split_metadata
from swin_tiny_hf.training.data_checks import check_data, missing_images, undecodable_images, warn_uncovered_classes


def best_of(repeats: int, function) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", default="outputs/tiny-imagenet-like")  # full_scale_rehearsal.py's
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(args.dataset_dir)
    if not (folder / "README.md").exists():
        synthetic_dataset.main(["--output_dir", str(folder)])
    load_image_dataset(str(folder))  # builds datasets' Arrow cache once
    dataset = load_image_dataset(str(folder))
    rows = {name: len(split) for name, split in dataset.items()}
    timings = {
        "load_image_dataset (warm cache, labels unified)": best_of(
            args.repeats, lambda: load_image_dataset(str(folder))
        ),
        "parquet footers: class names and shard spans": best_of(
            args.repeats, lambda: read_split_metadata(_parquet_files(str(folder), None, None), "label")
        ),
        f"image cells of train ({rows['train']:,} rows)": best_of(
            args.repeats, lambda: missing_images(dataset["train"])
        ),
        f"image cells of validation ({rows['validation']:,} rows)": best_of(
            args.repeats, lambda: missing_images(dataset["validation"])
        ),
        f"decode every validation image ({rows['validation']:,})": best_of(
            args.repeats, lambda: undecodable_images(dataset["validation"], dataset.sources["validation"])
        ),
        "label coverage": best_of(args.repeats, lambda: warn_uncovered_classes(dataset)),
        "check_data, all of the checks": best_of(
            args.repeats, lambda: check_data(dataset, dataset.sources, skip_bad_images=False, per_device_batch=64)
        ),
    }
    print(f"## Data checks at start, {rows['train']:,} + {rows['validation']:,} images ({cpu_name()})")
    print("| check | seconds |")
    print("| --- | --- |")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
