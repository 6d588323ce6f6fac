"""The suite's own machinery (tests/suite_runner.py), as scripts/test.sh runs it in pytest-xdist's workers: each
worker's share of the CPUs, and the notes of a test that runs long, with tests running side by side. Each test's
notes stop when that test ends, or at the session's end for a test that never ends (Ctrl-C, -x, a lost worker)."""

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from suite_runner import LongTestNotes, share_the_cpus, usable_cpus

A, B = "tests/a.py::test_long", "tests/b.py::test_longer"
SUITE_RUNNER = Path(__file__).resolve().parent / "suite_runner.py"


class Terminal:
    """What LongTestNotes uses of pytest's TerminalReporter, at the default verbosity of an xdist run."""

    currentfspath = None
    showlongtestinfo = False
    showfspath = False

    def write_line(self, line):
        pass


@pytest.fixture
def notes_and_output():
    """LongTestNotes with notes every 50 ms, writing to a pipe; `take()` returns what was written since the last
    call."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    notes = LongTestNotes(Terminal(), write_end)
    notes.first_note_s = notes.note_every_s = 0.05

    def take() -> str:
        chunks = []
        try:
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        return b"".join(chunks).decode()

    def take_until(done) -> str:
        """What is written until `done(written)` (5 s at most: a loaded machine)."""
        written, deadline = "", time.monotonic() + 5
        while not done(written) and time.monotonic() < deadline:
            time.sleep(0.05)
            written += take()
        return written

    def written_after_the_end() -> str:
        """What is written in the 0.2 s (four notes' time) after what was written so far is taken."""
        take()
        time.sleep(0.2)
        return take()

    yield notes, take, take_until, written_after_the_end
    notes.pytest_sessionfinish()
    os.close(read_end)
    os.close(write_end)


def test_two_tests_side_by_side_each_note_until_its_own_end(notes_and_output):
    notes, take, take_until, written_after_the_end = notes_and_output
    notes.pytest_runtest_logstart(A, None)
    notes.pytest_runtest_logstart(B, None)  # on the other worker, before A ends
    both = take_until(lambda written: A in written and B in written)
    assert f"{A}: running for" in both and f"{B}: running for" in both
    notes.pytest_runtest_logfinish(A, None)
    take()
    after_a = take_until(lambda written: written.count(B) >= 2)  # two of B's notes
    assert after_a.count(f"{B}: running for") >= 2 and A not in after_a
    notes.pytest_runtest_logfinish(B, None)
    assert written_after_the_end() == "" and notes.running == {}


def test_a_test_whose_worker_died_notes_no_more(notes_and_output):
    notes, take, take_until, written_after_the_end = notes_and_output
    notes.pytest_runtest_logstart(A, None)
    assert A in take_until(lambda written: A in written)
    notes.pytest_handlecrashitem(crashitem=A, report=None, sched=None)  # pytest-xdist's hook: no logfinish comes
    assert written_after_the_end() == "" and notes.running == {}


def test_the_session_end_stops_the_notes_of_tests_that_never_finished(notes_and_output):
    notes, take, take_until, written_after_the_end = notes_and_output
    notes.pytest_runtest_logstart(A, None)
    notes.pytest_runtest_logstart(B, None)
    assert A in take_until(lambda written: A in written and B in written)
    notes.pytest_sessionfinish()
    assert written_after_the_end() == "" and notes.running == {}


@pytest.fixture
def threads_restored():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("threads_restored")
def test_each_worker_takes_its_share_of_the_cpus_unless_omp_num_threads_is_set(monkeypatch):
    cpus = usable_cpus()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert share_the_cpus(1) == cpus == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == str(cpus)
    monkeypatch.delenv("OMP_NUM_THREADS")
    share = max(1, cpus // 2)
    assert share_the_cpus(2) == share == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == str(share)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert share_the_cpus(cpus + 1) == 1 == torch.get_num_threads()  # never less than one
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's: kept
    assert share_the_cpus(2) == 3 == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == "3"
    # set but empty, zero (a worker would fail to start), the nested form "3,1" (accelerate rejects it): the share
    for value in ("", "0", "3,1"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert share_the_cpus(2) == share == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == str(share)


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="runs in a pytest-xdist worker (scripts/test.sh)")
def test_this_worker_runs_with_its_share_of_the_cpus():
    """What the processes that tests start inherit, and what torch runs with here, are the same share."""
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])


def test_in_xdist_workers_notes_stand_on_their_own_lines_and_end_with_their_tests(tmp_path):
    """A real pytest with two workers and -v (pytest's own terminal, xdist's reports): notes every 0.2 s, two tests
    side by side, one that kills its worker and one that runs on after it."""
    (tmp_path / "notes_plugin.py").write_text(
        textwrap.dedent(f"""
            import importlib.util
            spec = importlib.util.spec_from_file_location("suite_runner", {str(SUITE_RUNNER)!r})
            suite = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(suite)
            suite.LongTestNotes.first_note_s = suite.LongTestNotes.note_every_s = 0.2
            pytest_configure = suite.pytest_configure
        """)
    )
    (tmp_path / "test_side_by_side.py").write_text(
        textwrap.dedent("""
            import os, signal, time
            def test_a():
                time.sleep(1)
            def test_b():
                time.sleep(1)
            def test_crash():
                time.sleep(0.5)
                os.kill(os.getpid(), signal.SIGKILL)
            def test_after():
                time.sleep(2.5)
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "notes_plugin", "-p", "no:cacheprovider", "-n", "2", "-v"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"},  # in the order of the terminal
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout
    assert result.returncode == 1 and "crashed" in output, output[-3000:]
    notes = [line for line in output.splitlines() if "running for" in line]
    assert any("::test_a: running for" in n for n in notes) and any("::test_b: running for" in n for n in notes)
    assert all(re.fullmatch(r"    \S+::test_\w+: running for \d+ s", n) for n in notes), output[-3000:]
    # the crashed test's notes stopped with it (0.5 s), not on to the session's end as test_after's (2.5 s)
    crash, after = (sum(f"::test_{name}: running for" in n for n in notes) for name in ("crash", "after"))
    assert crash < after / 2, output[-3000:]
