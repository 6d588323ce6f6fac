"""The suite's own machinery (tests/conftest.py), as scripts/test.sh runs it in pytest-xdist's workers: each
worker's share of the CPUs, and the notes of a test that runs long, with tests running side by side. Each test's
notes stop when that test ends, or at the session's end for a test that never ends (Ctrl-C, -x, a lost worker)."""

import os
import time

import pytest
import torch

from conftest import LongTestNotes, share_the_cpus

A, B = "tests/a.py::test_long", "tests/b.py::test_longer"


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

    yield notes, take, take_until
    notes.pytest_sessionfinish()
    os.close(read_end)
    os.close(write_end)


def test_two_tests_side_by_side_each_note_until_its_own_end(notes_and_output):
    notes, take, take_until = notes_and_output
    notes.pytest_runtest_logstart(A, None)
    notes.pytest_runtest_logstart(B, None)  # on the other worker, before A ends
    both = take_until(lambda written: A in written and B in written)
    assert f"{A}: running for" in both and f"{B}: running for" in both
    notes.pytest_runtest_logfinish(A, None)
    take()
    after_a = take_until(lambda written: written.count(B) >= 2)  # two of B's notes
    assert after_a.count(f"{B}: running for") >= 2 and A not in after_a
    notes.pytest_runtest_logfinish(B, None)
    take()
    time.sleep(0.2)
    assert take() == "" and notes.running == {}


def test_the_session_end_stops_the_notes_of_tests_that_never_finished(notes_and_output):
    notes, take, take_until = notes_and_output
    notes.pytest_runtest_logstart(A, None)
    notes.pytest_runtest_logstart(B, None)
    assert A in take_until(lambda written: A in written and B in written)
    notes.pytest_sessionfinish()
    take()
    time.sleep(0.2)
    assert take() == "" and notes.running == {}


@pytest.fixture
def threads_restored():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("threads_restored")
def test_each_worker_takes_its_share_of_the_cpus_unless_omp_num_threads_is_set(monkeypatch):
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert share_the_cpus(1) == cpus == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == str(cpus)
    monkeypatch.delenv("OMP_NUM_THREADS")
    share = max(1, cpus // 2)
    assert share_the_cpus(2) == share == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == str(share)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert share_the_cpus(cpus + 1) == 1 == torch.get_num_threads()  # never less than one
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # the user's, in OpenMP's nested form: kept, its outer level taken
    assert share_the_cpus(2) == 3 == torch.get_num_threads() and os.environ["OMP_NUM_THREADS"] == "3,1"
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: as unset
    assert share_the_cpus(2) == share and os.environ["OMP_NUM_THREADS"] == str(share)


@pytest.mark.skipif("PYTEST_XDIST_WORKER" not in os.environ, reason="runs in a pytest-xdist worker (scripts/test.sh)")
def test_this_worker_runs_with_its_share_of_the_cpus():
    """What the processes that tests start inherit, and what torch runs with here, are the same share."""
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"].split(",")[0])
