"""How the suite runs (scripts/test.sh): pytest-xdist's workers each with their share of the CPUs, the slow tests
first, and notes of the tests that run long. tests/conftest.py takes its hooks from here. Nothing here imports
torch at import time: tests/test_suite_runner.py runs a real pytest with this module as its only plugin."""

import os
import sys
import threading
import time

import pytest


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
        if self.terminal.showlongtestinfo:
            # -2: pytest's own mark of a line begun; with -v its next result starts a new one (also under xdist)
            self.terminal.currentfspath = -2
            return
        self.terminal.currentfspath = None
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

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem, report, sched):
        """A pytest-xdist worker died in a test: no logfinish comes for it."""
        self.stop_notes(crashitem)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self):
        for nodeid in list(self.running):  # a test interrupted (Ctrl-C, -x, a worker lost) never finishes
            self.stop_notes(nodeid)


def pytest_collection_modifyitems(config, items):
    """The slow tests first, the others in their order: with pytest-xdist's workers (scripts/test.sh) the longest
    start at once and the short ones fill in around them, rather than one starting last while the other workers
    have nothing left to run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity; the count of all CPUs where there is none, as on macOS)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def share_the_cpus(workers: int) -> int:
    """In each of `workers` pytest-xdist workers: this process's share of the CPUs as threads, for torch here and,
    through OMP_NUM_THREADS, for the processes the tests start (train.py, accelerate launch, the quick start). Two
    threads on one core wait for each other at every OpenMP barrier and slow both several times over (BENCHMARKS.md).
    An OMP_NUM_THREADS set before pytest started to a whole number of threads is kept. Returns the threads."""
    # also in place of an empty value, 0, or a form accelerate rejects ("3,1")
    if not os.environ.get("OMP_NUM_THREADS", "").isdigit() or int(os.environ["OMP_NUM_THREADS"]) < 1:
        os.environ["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // workers))
    threads = int(os.environ["OMP_NUM_THREADS"])
    import torch  # here, in a worker: this module stays light to import

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
