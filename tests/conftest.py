"""Shared fixtures: a tiny config (the transformers "model tester" pattern) so most tests run in milliseconds."""

import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from swin_tiny_hf import SwinTinyConfig


def tiny_config(**overrides) -> SwinTinyConfig:
    """32 px, patch 2: stages of 16, 8 and 4 tokens a side; windows of 4, so stages 0 and 1 shift and the
    last one (4 <= 4) is clipped and does not."""
    values = dict(
        image_size=32,
        patch_size=2,
        embed_dim=16,
        depths=[2, 2, 2],
        num_heads=[1, 2, 4],
        window_size=4,
        drop_path_rate=0.1,
    )
    values.update(overrides)
    if "id2label" not in values:
        values.setdefault("num_labels", 5)
    return SwinTinyConfig(**values)


@pytest.fixture
def config() -> SwinTinyConfig:
    return tiny_config()


@pytest.fixture
def pixel_values() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def perturbed(model, scale: float = 0.02):
    """Random values added to every parameter, in eval mode: LayerNorms (1, 0) and bias tables (near 0) start
    trivial and would hide a mistake in the weights they touch."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * scale)
    return model.eval()


def run_without_the_package(script: str, tmp_path) -> str:
    """Run `script` in a fresh interpreter where `import swin_tiny_hf` fails (remote code only); return stdout."""
    guard = 'import sys\nsys.modules["swin_tiny_hf"] = None  # any import of the package now raises ImportError\n'
    result = subprocess.run(
        [sys.executable, "-c", guard + script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class LongTestNotes:
    """Progress while a test runs long: pytest shows a test only when it ends, and the end-to-end runs take minutes
    each. After 30 s, and then every minute, a line names the test and the time so far; pytest's next result starts
    a fresh line. With pytest-xdist's workers (scripts/test.sh) tests run side by side: each has its own notes,
    written by the controller, which hears of every test's start and end."""

    first_note_s, note_every_s = 30, 60

    def __init__(self, terminal, terminal_fd: int):
        self.terminal = terminal  # pytest's TerminalReporter
        self.terminal_fd = terminal_fd  # a copy of the terminal's fd 1, taken before pytest captures the tests' fd 1
        self.lock = threading.Lock()
        self.noted = False  # a note was written since pytest's last output
        self.running: dict[str, tuple[threading.Event, threading.Thread]] = {}  # by test id

    def notes(self, nodeid: str, stop: threading.Event) -> None:
        start, wait = time.monotonic(), self.first_note_s
        while not stop.wait(wait):
            minutes, seconds = divmod(round(time.monotonic() - start), 60)
            so_far = f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
            with self.lock:
                os.write(self.terminal_fd, f"\n    {nodeid}: running for {so_far}".encode())
                self.noted = True
            wait = self.note_every_s

    def new_line_after_a_note(self, nodeid: str) -> None:
        """pytest goes on at a fresh line, as it would after its own: with -v it names the test again, by default
        the file (its results go on after it), with -q the dots go on."""
        if not self.noted:
            return
        self.noted = False
        self.terminal.currentfspath = None
        if self.terminal.showlongtestinfo:
            return
        if self.terminal.showfspath:
            self.terminal.write_fspath_result(nodeid, "")
        else:
            self.terminal.write_line("")

    def stop_notes(self, nodeid: str) -> None:
        stop, thread = self.running.pop(nodeid, (None, None))
        if stop is not None:
            stop.set()
            thread.join()

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid, location):
        self.stop_notes(nodeid)  # a test run again (a plugin's rerun) starts its count afresh
        stop = threading.Event()
        thread = threading.Thread(target=self.notes, args=(nodeid, stop), daemon=True)
        self.running[nodeid] = (stop, thread)
        thread.start()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report):
        with self.lock:  # no note in the middle of pytest's own line
            self.new_line_after_a_note(report.nodeid)
            return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logfinish(self, nodeid, location):
        self.stop_notes(nodeid)
        with self.lock:
            self.new_line_after_a_note(nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self):
        for nodeid in list(self.running):  # a test interrupted (Ctrl-C, -x, a worker lost) never finishes
            self.stop_notes(nodeid)


def pytest_collection_modifyitems(config, items):
    """The slow tests first, the others in their order: with pytest-xdist's workers (scripts/test.sh) the longest
    start at once and the short ones fill in around them, rather than one starting last while the other workers
    have nothing left to run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def share_the_cpus(workers: int) -> int:
    """In each of `workers` pytest-xdist workers: this process's share of the CPUs as threads, for torch here and,
    through OMP_NUM_THREADS, for the processes the tests start (train.py, accelerate launch, the quick start). Two
    threads on one core wait for each other at every OpenMP barrier and slow both several times over (BENCHMARKS.md).
    An OMP_NUM_THREADS set before pytest started is kept. Returns the threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not on macOS
    if not os.environ.get("OMP_NUM_THREADS"):
        os.environ["OMP_NUM_THREADS"] = str(max(1, cpus // workers))
    threads = int(os.environ["OMP_NUM_THREADS"].split(",")[0])  # OpenMP's nested form "4,2": the outer level
    torch.set_num_threads(threads)
    return threads


@pytest.hookimpl(trylast=True)  # after pytest's terminal reporter is registered
def pytest_configure(config):
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the controller, which has the terminal, writes notes
        share_the_cpus(config.workerinput["workercount"])
        return
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return
    try:
        with capture.global_and_fixture_disabled():
            terminal_fd = os.dup(sys.stdout.fileno())
    except (OSError, ValueError):  # a stdout without a file descriptor (pytest.main in a notebook): no notes
        return
    config.add_cleanup(lambda: os.close(terminal_fd))
    config.pluginmanager.register(LongTestNotes(terminal, terminal_fd), "long-test-notes")
