"""One command for the GPU figures: correctness of the CUDA path, model and data throughput, a real training run.

    python benchmarks/gpu_report.py --output_dir gpu-report            # on a CUDA machine (minutes)
    python benchmarks/gpu_report.py --output_dir gpu-report --smoke    # the same code on CPU, tiny sizes, seconds

Writes `report.md` (the tables for BENCHMARKS.md) and `report.json` (every figure) to --output_dir, after
each section, so that a run cut short keeps what it measured; a later run into the same folder adds its
sections to the report (the sections can run in separate calls where a call's time is limited; the model
section can be narrowed with --model_precisions, --model_batches and --model_modes).
Sections (`--sections`, all by default):
1. correctness: the device's logits, loss and gradients against fp32 on the CPU, in fp32, fp16 autocast
   and bf16 autocast, with the tolerances stated in the table; no NaN or inf anywhere.
2. model: training-step and inference images/s and peak memory of swin_tiny_hf and of timm's
   SwinTransformer at the same config, for each precision x eager/compiled x batch size.
3. data: the training data pipeline (decode, the reference augmentation, Mixup/CutMix collate) through a
   DataLoader with 1 to all cores of workers, images/s.
4. train: `accelerate launch train.py` in fp16 on a generated Tiny ImageNet-shaped dataset for a fixed
   number of steps: end-to-end images/s, the share of time the loop waited for data (loader-bound or
   GPU-bound), the evaluation time on the validation split, and the projected wall time of the 200-epoch
   recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_throughput import timm_swin  # noqa: E402

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification  # noqa: E402
from swin_tiny_hf.convert import timm_swin_kwargs  # noqa: E402

# Relative error ||device - cpu_fp32|| / ||cpu_fp32|| allowed for (logits, loss, gradients), per precision.
TOLERANCES = {"fp32": (1e-4, 1e-4, 1e-3), "fp16": (1e-2, 1e-2, 5e-2), "bf16": (5e-2, 5e-2, 2e-1)}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
RECIPE_TRAIN_IMAGES, RECIPE_EPOCHS = 100_000, 200


def settings(smoke: bool, device: torch.device) -> dict:
    """Sizes of each section: the real ones on a GPU, tiny ones for --smoke."""
    if smoke:
        return dict(
            config=dict(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
            correctness_batch=4,
            batches=[4],
            dtypes=["fp32", "bf16"],
            compile_backend="eager",  # dynamo's tracing without inductor's minutes of compilation
            modes=["eager", "compiled"],
            repeats=2,
            data_images=64,
            data_batch=16,
            workers=[0, 1],
            dataset=dict(train_per_class=4, valid_per_class=2, num_classes=10),
            train_steps=4,
            train_batch=8,
            train_workers=1,
            precision="no" if device.type == "cpu" else "fp16",
        )
    return dict(
        config={},  # the default Tiny ImageNet model: 64 px, 27.7M parameters
        correctness_batch=16,
        batches=[64, 256],
        dtypes=["fp32", "fp16", "bf16"],
        compile_backend="inductor",
        modes=["eager", "compiled"],
        repeats=20,
        data_images=4096,
        data_batch=64,
        workers=sorted({1, 2, 4, 8, os.cpu_count() or 1}),
        dataset=dict(train_per_class=100, valid_per_class=50, num_classes=200),
        train_steps=300,
        train_batch=64,
        train_workers=min(8, os.cpu_count() or 1),  # train.py's default on a GPU
        precision="fp16",
    )


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float().cpu() - reference).norm() / reference.norm().clamp(min=1e-12))


# ------------------------------------------------------------------------------------------ 1. correctness
def correctness(device: torch.device, sizes: dict) -> list[dict]:
    """Logits, loss and gradients on `device` in each precision against fp32 on the CPU (eval mode: no drop path)."""
    # fp32 means fp32 here: no TF32 in matmuls or convolutions (put back afterwards)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        return _correctness(device, sizes)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _correctness(device: torch.device, sizes: dict) -> list[dict]:
    torch.manual_seed(0)
    config = SwinTinyConfig(**sizes["config"], num_labels=10)
    reference_model = SwinTinyForImageClassification(config).eval()
    pixels = torch.randn(sizes["correctness_batch"], 3, config.image_size, config.image_size)
    labels = torch.randint(0, 10, (pixels.shape[0],))
    output = reference_model(pixels, labels=labels)
    output.loss.backward()
    reference = (output.logits.detach(), output.loss.detach(), _gradients(reference_model))

    rows = []
    for name in ("fp32", "fp16", "bf16"):
        if device.type == "cpu" and name == "fp16":
            continue  # CPU autocast is bf16
        model = SwinTinyForImageClassification(config).eval().to(device)
        model.load_state_dict(reference_model.state_dict())
        with torch.autocast(device.type, dtype=DTYPES[name], enabled=name != "fp32"):
            out = model(pixels.to(device), labels=labels.to(device))
        out.loss.backward()
        gradients = _gradients(model)
        errors = (
            relative_error(out.logits.detach(), reference[0]),
            relative_error(out.loss.detach(), reference[1]),
            relative_error(gradients, reference[2]),
        )
        finite = bool(
            torch.isfinite(out.logits).all() and torch.isfinite(out.loss) and torch.isfinite(gradients).all()
        )
        passed = finite and all(e <= t for e, t in zip(errors, TOLERANCES[name]))
        rows.append(
            dict(
                precision=name,
                logits=errors[0],
                loss=errors[1],
                gradients=errors[2],
                finite=finite,
                tolerances=TOLERANCES[name],
                passed=passed,
            )
        )
    return rows


def _gradients(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten().float().cpu() for p in model.parameters() if p.grad is not None])


# ------------------------------------------------------------------------------------------ 2. model throughput
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(function, device: torch.device, repeats: int) -> float:
    """Median seconds of `function` over `repeats` calls, after two warm-up calls (compilation happens there)."""
    for _ in range(2):
        function()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def model_throughput(device: torch.device, sizes: dict) -> list[dict]:
    config = SwinTinyConfig(**sizes["config"])
    timm_config = timm_swin_kwargs(config)  # the same architecture in timm
    builders = {
        "swin_tiny_hf": lambda: SwinTinyForImageClassification(config),
        "timm SwinTransformer (fused attn)": lambda: timm_swin(True, **timm_config),
    }
    rows = []
    for batch in sizes["batches"]:
        pixels = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
        labels = torch.randint(0, config.num_labels, (batch,), device=device)
        for precision in sizes["dtypes"]:
            for compiled in [mode == "compiled" for mode in sizes["modes"]]:
                for name, build in builders.items():
                    rows.append(_measure_model(name, build, pixels, labels, precision, compiled, device, sizes))
    return rows


def _measure_model(name, build, pixels, labels, precision, compiled, device, sizes) -> dict:
    torch.manual_seed(0)
    model = build().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    runner = torch.compile(model, backend=sizes["compile_backend"]) if compiled else model
    autocast = dict(device_type=device.type, dtype=DTYPES[precision], enabled=precision != "fp32")

    def logits_of(output):
        return output.logits if hasattr(output, "logits") else output

    def train_step():
        with torch.autocast(**autocast):
            loss = torch.nn.functional.cross_entropy(logits_of(runner(pixels)).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def inference():
        with torch.no_grad(), torch.autocast(**autocast):
            runner(pixels)

    row = dict(model=name, precision=precision, compiled=compiled, batch=pixels.shape[0])
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        runner.train()
        row["train_images_per_second"] = pixels.shape[0] / _time(train_step, device, sizes["repeats"])
        row["train_peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        runner.eval()
        row["inference_images_per_second"] = pixels.shape[0] / _time(inference, device, sizes["repeats"])
    except Exception as error:  # an out-of-memory or a compiler failure is a figure too
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


# ------------------------------------------------------------------------------------------ 3. data pipeline
def data_throughput(sizes: dict, dataset_dir: Path) -> list[dict]:
    """Images/s of the training loader (decode, augmentation, Mixup/CutMix) with each worker count."""
    import datasets
    from torch.utils.data import DataLoader

    from swin_tiny_hf.image_processing_swin_tiny import TINY_IMAGENET_MEAN, TINY_IMAGENET_STD
    from swin_tiny_hf.training.batch_augmentation import ReferenceTrainAugmentation
    from swin_tiny_hf.training.collate import MixupCutmixCollator
    from swin_tiny_hf.training.data import prepare_splits
    from swin_tiny_hf.training.transforms import TrainTransform

    raw = datasets.load_dataset(str(dataset_dir))
    split = prepare_splits(raw, "image", "label", 0.1, 0)["train"]
    split = split.select(range(min(sizes["data_images"], len(split))))
    num_classes = split.features["label"].num_classes
    transform = TrainTransform(ReferenceTrainAugmentation(64, TINY_IMAGENET_MEAN, TINY_IMAGENET_STD, 5, 0.5), 0)
    collator = MixupCutmixCollator(num_classes, off_first_epochs=0, off_last_epochs=0)
    rows = []
    for workers in sizes["workers"]:
        loader = DataLoader(
            split.with_transform(transform),
            batch_size=sizes["data_batch"],
            shuffle=True,
            collate_fn=collator,
            num_workers=workers,
            drop_last=True,
        )
        start, images = None, 0
        for index, batch in enumerate(loader):
            if index == 0:  # worker start-up and the first batch are not throughput
                start = time.perf_counter()
                continue
            images += batch["pixel_values"].shape[0]
        seconds = time.perf_counter() - start
        rows.append(dict(workers=workers, images=images, images_per_second=images / max(seconds, 1e-9)))
    return rows


# ------------------------------------------------------------------------------------------ 4. training run
def training_run(sizes: dict, dataset_dir: Path, output_dir: Path, device: torch.device) -> dict:
    """`accelerate launch train.py` for a fixed number of steps; end-to-end figures and the recipe's projection."""
    run_dir = output_dir / "train-run"
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        sizes["precision"],
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        str(os.cpu_count() or 1),
    ]
    if device.type == "cpu":
        launcher.append("--cpu")
    flags = [
        "--dataset_name",
        str(dataset_dir),
        "--output_dir",
        str(run_dir),
        "--overwrite_output_dir",  # a measurement: a rerun replaces the last one
        "--max_train_steps",
        str(sizes["train_steps"]),
        "--per_device_train_batch_size",
        str(sizes["train_batch"]),
        "--dataloader_num_workers",
        str(sizes["train_workers"]),
        "--mixed_precision",
        sizes["precision"],
        "--warmup_epochs",
        "0",
        "--mix_off_first_epochs",
        "0",
    ]
    flags += [
        arg
        for key, value in sizes["config"].items()
        for arg in (f"--{key}", *map(str, value if isinstance(value, list) else [value]))
    ]
    start = time.perf_counter()
    result = subprocess.run(
        [*launcher, str(ROOT / "train.py"), *flags],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return dict(error=result.stderr[-3000:], wall_seconds=wall)
    row = json.loads((run_dir / "history.json").read_text())[0]
    results = json.loads((run_dir / "all_results.json").read_text())
    steps_per_second = row["images_per_second"] / sizes["train_batch"]
    epoch_seconds = RECIPE_TRAIN_IMAGES / row["images_per_second"]
    return dict(
        steps=sizes["train_steps"],
        batch=sizes["train_batch"],
        precision=sizes["precision"],
        images_per_second=row["images_per_second"],
        steps_per_second=steps_per_second,
        data_wait_share=row["data_seconds"] / max(row["epoch_seconds"], 1e-9),
        bound_by="data loader" if row["data_seconds"] / max(row["epoch_seconds"], 1e-9) > 0.2 else "GPU (model)",
        dataloader_workers=sizes["train_workers"],
        time_to_first_step_seconds=results.get("time_to_first_step_seconds"),
        eval_seconds=row["eval_seconds"],
        eval_samples=results["eval_samples"],
        projected_recipe_hours=RECIPE_EPOCHS
        * (epoch_seconds + row["eval_seconds"] * 10_000 / results["eval_samples"])
        / 3600,
        wall_seconds=wall,
    )


# ------------------------------------------------------------------------------------------ report
def markdown(report: dict) -> str:
    lines = [
        f"# GPU report: {report['device']}",
        "",
        f"torch {report['torch']}, CUDA {report['cuda']}, {report['cpu_cores']} CPU cores"
        f"{' (smoke run: tiny sizes, not figures)' if report['smoke'] else ''}.",
        "",
    ]
    if "correctness" in report:
        lines += [
            "## Correctness against fp32 on the CPU (relative error, tolerance)",
            "",
            "| precision | logits | loss | gradients | finite | passed |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in report["correctness"]:
            t = r["tolerances"]
            lines.append(
                f"| {r['precision']} | {r['logits']:.2e} ({t[0]:g}) | {r['loss']:.2e} ({t[1]:g}) | "
                f"{r['gradients']:.2e} ({t[2]:g}) | {r['finite']} | {r['passed']} |"
            )
        lines.append("")
    if "model" in report:
        lines += [
            "## Model throughput (images/s) and peak memory",
            "",
            "| model | precision | compiled | batch | train img/s | train peak GiB | inference img/s |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in report["model"]:
            if "error" in r:
                lines.append(
                    f"| {r['model']} | {r['precision']} | {r['compiled']} | {r['batch']} | {r['error']} | | |"
                )
                continue
            memory = "n/a" if r["train_peak_memory_gib"] is None else f"{r['train_peak_memory_gib']:.2f}"
            lines.append(
                f"| {r['model']} | {r['precision']} | {r['compiled']} | {r['batch']} | "
                f"{r['train_images_per_second']:.0f} | {memory} | {r['inference_images_per_second']:.0f} |"
            )
        lines.append("")
    if "data" in report:
        lines += [
            "## Training data pipeline (decode, augmentation, Mixup/CutMix)",
            "",
            "| workers | images/s |",
            "| --- | --- |",
        ]
        lines += [f"| {r['workers']} | {r['images_per_second']:.0f} |" for r in report["data"]]
        lines.append("")
    if "train" in report:
        r = report["train"]
        lines += ["## `accelerate launch train.py` on the generated Tiny ImageNet-shaped dataset", ""]
        if "error" in r:
            lines += ["```", r["error"], "```"]
        else:
            lines += [
                "| steps | batch | precision | images/s | waiting for data | bound by | eval (s) | "
                "recipe projection (h) |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
                f"| {r['steps']} | {r['batch']} | {r['precision']} | {r['images_per_second']:.0f} | "
                f"{100 * r['data_wait_share']:.0f}% | {r['bound_by']} | {r['eval_seconds']:.1f} "
                f"({r['eval_samples']} images) | {r['projected_recipe_hours']:.2f} |",
            ]
        lines.append("")
    return "\n".join(lines)


def _model_row_key(row: dict) -> tuple:
    return row["model"], row["precision"], row["compiled"], row["batch"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, on CPU unless a GPU is there: seconds")
    parser.add_argument("--sections", default="correctness,model,data,train")
    parser.add_argument("--model_precisions", default=None, help="e.g. fp16,bf16 (default: fp32,fp16,bf16)")
    parser.add_argument("--model_batches", default=None, help="e.g. 64 (default: 64,256)")
    parser.add_argument("--model_modes", default=None, help="eager, compiled, or eager,compiled (the default)")
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = set(sections) - {"correctness", "model", "data", "train"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from correctness, model, data, train")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        parser.error("no CUDA device here: run with --smoke for the CPU check of this script")
    sizes = settings(args.smoke, device)
    if args.model_precisions:
        sizes["dtypes"] = args.model_precisions.split(",")
    if args.model_batches:
        sizes["batches"] = [int(b) for b in args.model_batches.split(",")]
    if args.model_modes:
        sizes["modes"] = args.model_modes.split(",")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    saved = output_dir / "report.json"
    report = json.loads(saved.read_text()) if saved.exists() else {}
    report.update(
        device=torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'})",
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cpu_cores=os.cpu_count(),
        smoke=args.smoke,
    )

    def save(section: str, rows) -> None:
        if section == "model" and isinstance(report.get("model"), list):
            # rows measured in an earlier call stay, unless this call measured them again
            measured = {_model_row_key(r) for r in rows}
            rows = [r for r in report["model"] if _model_row_key(r) not in measured] + rows
        report[section] = rows
        saved.write_text(json.dumps(report, indent=2))
        (output_dir / "report.md").write_text(markdown(report))

    if "correctness" in sections:
        save("correctness", correctness(device, sizes))
    if "model" in sections:
        save("model", model_throughput(device, sizes))
    if {"data", "train"} & set(sections):
        from swin_tiny_hf.training.synthetic_dataset import synthetic_tiny_imagenet, write_hub_layout

        dataset_dir = output_dir / "tiny-imagenet-like"
        if not (dataset_dir / "README.md").exists():
            write_hub_layout(synthetic_tiny_imagenet(**sizes["dataset"]), dataset_dir)
        if "data" in sections:
            save("data", data_throughput(sizes, dataset_dir))
        if "train" in sections:
            save("train", training_run(sizes, dataset_dir, output_dir, device))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
