"""The main job at Tiny ImageNet's scale on this machine, offline: data loading, the first step, throughput.

    python benchmarks/full_scale_rehearsal.py [--dataset_dir DIR] [--steps 30] [--workers 0 1 2]

Writes (once) a generated dataset with Tiny ImageNet's shape in the Hub repository's layout (100,000 train
and 10,000 valid 64x64 JPEGs, 200 WordNet-id classes; `swin_tiny_hf.training.synthetic_dataset`), then runs
`train.py --dataset_name DIR` (the default Swin-T, batch 64, the reference recipe) through the same
`load_dataset` call as `--dataset_name zh-plus/tiny-imagenet`, for a fixed number of steps with each number of
data-loader workers, and once `--eval_only` on the 10,000 validation images. Prints a Markdown table: time to
the first optimizer step (from the process's start), peak memory of the process tree (training process and
its workers, sampled), training images/s and the share of it spent waiting for data, and evaluation time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def peak_tree_memory(process: subprocess.Popen, samples: list[float]) -> None:
    """Sample the resident memory of `process` and all its descendants every 0.2 s, until it ends."""
    try:
        root = psutil.Process(process.pid)
        while process.poll() is None:
            total = 0
            for member in [root, *root.children(recursive=True)]:
                try:
                    total += member.memory_info().rss
                except psutil.Error:
                    pass
            samples.append(total / 2**30)
            time.sleep(0.2)
    except psutil.Error:
        pass


def run(flags: list[str]) -> tuple[float, float]:
    """train.py with flags; returns (wall seconds, peak GiB of the process tree). Raises if it fails."""
    samples: list[float] = []
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *flags],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = threading.Thread(target=peak_tree_memory, args=(process, samples), daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(flags)} failed:\n{stderr[-3000:]}")
    return time.perf_counter() - start, max(samples, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", default="outputs/tiny-imagenet-like")
    parser.add_argument("--output_dir", default="outputs/rehearsal")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mixed_precision", default="no")
    args = parser.parse_args()
    dataset_dir, output_dir = Path(args.dataset_dir), Path(args.output_dir)

    if not (dataset_dir / "README.md").exists():
        from swin_tiny_hf.training.synthetic_dataset import main as write_dataset

        start = time.perf_counter()
        write_dataset(["--output_dir", str(dataset_dir)])
        print(f"generated the dataset in {time.perf_counter() - start:.0f} s")
    import datasets

    start = time.perf_counter()
    loaded = datasets.load_dataset(str(dataset_dir))
    print(
        f"load_dataset (parquet to the Arrow cache when cold): {time.perf_counter() - start:.1f} s, "
        f"{len(loaded['train']):,} train / {len(loaded['valid']):,} valid rows"
    )

    common = ["--dataset_name", str(dataset_dir), "--mixed_precision", args.mixed_precision]
    rows = []
    for workers in args.workers:
        folder = output_dir / f"workers_{workers}"
        wall, peak = run(
            [
                *common,
                "--output_dir",
                str(folder),
                "--overwrite_output_dir",  # a measurement: a rerun replaces the last one
                "--max_train_steps",
                str(args.steps),
                "--dataloader_num_workers",
                str(workers),
                "--max_eval_samples",
                "512",
            ]
        )
        history = json.loads((folder / "history.json").read_text())[0]
        results = json.loads((folder / "all_results.json").read_text())
        rows.append(
            dict(
                workers=workers,
                first_step=results["time_to_first_step_seconds"],
                peak=peak,
                images_per_second=history["images_per_second"],
                waiting=history["data_seconds"] / history["epoch_seconds"],
                wall=wall,
            )
        )
    evaluation_dir = output_dir / "eval_only"
    wall, peak = run(
        [
            *common,
            "--eval_only",
            "--model_name_or_path",
            str(output_dir / f"workers_{args.workers[0]}"),
            "--output_dir",
            str(evaluation_dir),
            "--overwrite_output_dir",
        ]
    )
    evaluation = json.loads((evaluation_dir / "all_results.json").read_text())

    print(
        f"\n### Full-scale rehearsal: {args.steps} steps of batch 64, default Swin-T, precision "
        f"{args.mixed_precision}, {os.cpu_count()} cores"
    )
    print(
        "| data-loader workers | time to first step (s) | peak memory, process tree (GiB) | train images/s "
        "| waiting for data | wall (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['workers']} | {r['first_step']:.1f} | {r['peak']:.2f} | {r['images_per_second']:.1f} "
            f"| {100 * r['waiting']:.0f}% | {r['wall']:.0f} |"
        )
    print(
        f"\nevaluation (--eval_only) of {evaluation['eval_samples']:,} validation images: "
        f"{evaluation['eval_seconds']:.1f} s ({evaluation['eval_samples'] / evaluation['eval_seconds']:.0f} "
        f"images/s), peak memory {peak:.2f} GiB, wall {wall:.0f} s"
    )


if __name__ == "__main__":
    main()
