"""train.py runs for the tests, and the flags they share.

In this process through `train.main(argv)` (the flags a user passes, the code a user runs, without a fresh
interpreter's seconds of imports); in a subprocess only where the process is the point: signals, SIGKILL, two
processes, the run lock, and the command line itself.
"""

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

import train

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TINY_MODEL = [
    *"--image_size 32 --patch_size 2 --embed_dim 16 --depths 2 2 --num_heads 1 2 --window_size 4".split(),
    *"--drop_path_rate 0.1".split(),
]
# 320 digits, batch 16: 20 optimizer steps an epoch; mixing on from epoch 0 so it is exercised.
RESUME_RUN = [
    *"--dataset_name digits --max_train_samples 320 --max_eval_samples 40 --per_device_train_batch_size 16".split(),
    *"--num_train_epochs 2 --warmup_epochs 0.5 --learning_rate 1e-3 --mix_off_first_epochs 0".split(),
    *"--mix_off_last_epochs 0 --mixup_prob 0.5 --cutmix_prob 0.5 --checkpointing_steps 4".split(),
    *"--dataloader_num_workers 1 --seed 5".split(),
    *TINY_MODEL,
]
# A small run on a few digits: one epoch of two steps.
SHORT_RUN = [
    *"--dataset_name digits --max_train_samples 32 --max_eval_samples 16 --per_device_train_batch_size 16".split(),
    *"--num_train_epochs 1 --warmup_epochs 0".split(),
]
# A Tiny ImageNet-shaped model at 64 px (patch 4, one block a stage), two epochs of two steps.
TIN_RUN = [
    *"--image_size 64 --patch_size 4 --embed_dim 16 --depths 1 1 --num_heads 1 2 --window_size 8".split(),
    *"--per_device_train_batch_size 8 --num_train_epochs 2 --warmup_epochs 1 --mix_off_first_epochs 0".split(),
    *"--mix_off_last_epochs 0 --dataloader_num_workers 2".split(),
]
# Two processes on CPUs: `accelerate launch --cpu` starts one process whatever --num_processes says; this is
# accelerate's multi-process launcher (torchrun) with the CPU forced (ACCELERATE_USE_CPU): DDP over gloo. Each
# pytest-xdist worker (scripts/test.sh runs two or more) has its own rendezvous port, so that two such runs at once
# do not meet on torchrun's default one (29500).
XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
TWO_PROCESSES = (
    sys.executable,
    "-m",
    "accelerate.commands.launch",
    *"--multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no".split(),
    *f"--main_process_port {29501 + XDIST_WORKER}".split(),
)
TWO_CPU_PROCESSES_ENV = {"ACCELERATE_USE_CPU": "true"}
TIMING = ("images_per_second", "epoch_seconds", "data_seconds", "eval_seconds")


def reset_accelerator_state() -> None:
    """accelerate keeps one state per process (and refuses a second precision in it): each run starts afresh, as
    in a new process."""
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerator_state():
    """For modules that build Accelerators or call train.main themselves: use with `pytest.mark.usefixtures` or
    re-export it as an autouse fixture."""
    reset_accelerator_state()
    yield
    reset_accelerator_state()


@dataclass
class Run:
    """An in-process run: what main returned, how it stopped (None: it returned), what it logged (as on stderr)
    and the log records themselves."""

    results: dict | None
    exit_code: int | None
    log: str = field(repr=False)  # (a failed assertion on a Run shows its results and exit code, not pages of log)
    records: list[logging.LogRecord] = field(repr=False)

    def messages(self, logger: str = "train") -> str:
        """The messages of one logger, a line each (a message of several lines keeps them)."""
        return "\n".join(record.getMessage() for record in self.records if record.name == logger)

    def error_line(self) -> str:
        """The run's logged error."""
        return next(line for line in self.log.splitlines() if line.startswith("ERROR train: "))


class _Recorder(logging.Handler):
    """Every record that reaches the root logger (train's and its modules'), formatted as on stderr, tracebacks
    included (a "Traceback" in the text is an exception the run logged)."""

    def __init__(self):
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)
        self.lines.append(self.format(record))


def run_train(*flags, exit_code: int | None = None) -> Run:
    """`train.py FLAGS` in this process. A run that stops (SystemExit) must be expected with `exit_code`; one
    that was expected to stop and did not fails the test, as does an unexpected stop (with the run's log)."""
    recorder = _Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    reset_accelerator_state()
    results, code = None, None
    try:
        results = train.main([str(flag) for flag in flags])
    except SystemExit as stop:
        code = stop.code
    finally:
        root.removeHandler(recorder)
        reset_accelerator_state()
    run = Run(results, code, "\n".join(recorder.lines), recorder.records)
    assert code == exit_code, f"exit code {code}, expected {exit_code}; the run's log ends:\n{run.log[-3000:]}"
    return run


def train_subprocess(*flags, launcher=(sys.executable,), check=True, env=None) -> subprocess.CompletedProcess:
    """`train.py FLAGS` as a user runs it: a new process (or processes, through `launcher`)."""
    result = subprocess.run(
        [*launcher, str(ROOT / "train.py"), *map(str, flags)],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        cwd=ROOT,
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def drive(tmp_path, patch: str, *flags, launcher=(sys.executable,), env=None) -> subprocess.CompletedProcess:
    """train.py's main in a subprocess, after `patch` (Python run first, with `train` imported): a signal or a
    kill at a chosen point of the real code, deterministically."""
    script = tmp_path / f"drive_{abs(hash(patch))}.py"
    script.write_text(
        f"import os, signal, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport train\n{patch}\n"
        f"sys.argv = ['train.py', *{list(map(str, flags))!r}]\ntrain.main()\n"
    )
    return subprocess.run(
        [*launcher, str(script)], capture_output=True, text=True, env={**ENV, **(env or {})}, cwd=ROOT
    )


def error_line(stderr: str) -> str:
    """A subprocess run's logged error (progress bars share stderr, joined by carriage returns)."""
    return next(line for line in stderr.replace("\r", "\n").splitlines() if " ERROR train: " in line)


def history_without_timing(folder) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in TIMING} for row in json.loads((folder / "history.json").read_text())
    ]


def assert_same_weights(a, b) -> None:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6, msg=name)


def checkpoints(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("step_", "epoch_")))


@pytest.fixture
def small_disk(tmp_path):
    """A 256 MiB tmpfs, to fill up (root only; skipped where mounting is not allowed)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill_the_disk(path) -> None:
    """Write zeros to `path` until its device is full (1 MiB, then 4 KiB pages, then bytes)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for size in (1 << 20, 4096, 1):
        try:
            while os.write(descriptor, bytes(size)):
                pass
        except OSError:
            pass
    os.close(descriptor)
