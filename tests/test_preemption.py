"""The preemption handler on its own: which signals it takes, what it records, and a second signal's effect."""

import signal
import subprocess
import sys

import pytest

from swin_tiny_hf.training.preemption import Preempted, PreemptionHandler, parse_signals


def test_signal_names_parse_and_unhandleable_ones_are_refused():
    assert parse_signals(["SIGTERM", "usr1"]) == [signal.SIGTERM, signal.SIGUSR1]
    assert parse_signals(["none"]) == []
    for name in ("SIGKILL", "SIGSTOP", "SIGBOGUS"):
        with pytest.raises(ValueError, match=f"'{name}' is not a signal a process can handle"):
            parse_signals([name])


def test_the_first_signal_is_recorded_and_the_previous_handlers_come_back():
    previous = signal.getsignal(signal.SIGUSR1)
    handler = PreemptionHandler([signal.SIGUSR1]).install()
    try:
        assert handler.stop_requested() is None
        signal.raise_signal(signal.SIGUSR1)
        assert handler.stop_requested() is signal.SIGUSR1
    finally:
        handler.restore()
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_a_second_signal_takes_its_default_action_at_once():
    """The scheduler (or the user) that signals twice does not wait for the step to end."""
    script = (
        "import os, signal, time\n"
        "from swin_tiny_hf.training.preemption import PreemptionHandler\n"
        "handler = PreemptionHandler([signal.SIGTERM]).install()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.1)\n"
        "print('recorded', handler.received.name, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(5)\n"
        "print('still running')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout == "recorded SIGTERM\n" and result.returncode == -signal.SIGTERM


def test_the_agreed_signal_is_the_recorded_one_and_restore_can_be_called_again():
    """One process: `agreed_signal` (the last check of an evaluation) answers what was recorded; `restore` runs on
    every way out of a run, so a second call changes nothing."""
    previous = signal.getsignal(signal.SIGUSR1)
    handler = PreemptionHandler([signal.SIGUSR1]).install()
    try:
        assert handler.agreed_signal() is None
        signal.raise_signal(signal.SIGUSR1)
        assert handler.agreed_signal() is signal.SIGUSR1
    finally:
        handler.restore()
        handler.restore()
    assert signal.getsignal(signal.SIGUSR1) is previous


def test_a_preemption_without_a_checkpoint_says_so():
    assert str(Preempted("SIGTERM", 15, None)) == "stopped on SIGTERM; no output"
    assert Preempted("SIGUSR1", 10, "out/step_4").exit_code == 138
