"""Preemption: a signal (SIGTERM from Slurm, Kubernetes or a spot instance; SIGUSR1 from Slurm's --signal)
asks the run to stop at the next optimizer-step boundary, after a complete checkpoint of that step.

The handler only records the signal; the training loop asks `stop_requested` at every step boundary (and
between evaluation batches). With several processes the answer is agreed by all of them, an all-reduce of the
recorded signal over a CPU (gloo) group, so a signal to one rank is enough and every rank stops at the same step.
That collective runs on the host, never waiting for the GPU's queued work, and asynchronously: each call starts
the reduction of the flags as they are now and returns the result of the one started at the previous call, which
has long arrived. Every process gets the same answer at the same call. On a busy host the reduction still costs
about a millisecond (benchmarks/preemption_cost.py), so with several processes only every `check_every`-th call
communicates: a signal stops the run within 2 x check_every steps. One process checks its flag at every call.

Data-loader workers ignore these signals (see `ignore_in_worker`): they stop when the main process closes them.
train.py installs the handler before it locks its folder and restores it on every way out of `main`; an
--eval_only run asks it between batches too, and stops without writing (`Preempted` with no checkpoint).
"""

from __future__ import annotations

import logging
import os
import signal

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(Exception):
    """The run stopped on a signal; `exit_code` is 128 + the signal's number. `checkpoint` is the one written to
    resume from, or None where the run had nothing to resume (an --eval_only run stops without writing)."""

    def __init__(self, signal_name: str, signal_number: int, checkpoint: str | None):
        super().__init__(f"stopped on {signal_name}; " + (f"checkpoint {checkpoint}" if checkpoint else "no output"))
        self.signal_name, self.checkpoint = signal_name, checkpoint
        self.exit_code = 128 + signal_number


def parse_signals(names: list[str]) -> list[signal.Signals]:
    """Signal names ("SIGTERM", "USR1") -> signals; ["none"] -> []. A ValueError names an unknown one."""
    if [n.lower() for n in names] == ["none"]:
        return []
    parsed = []
    for name in names:
        full = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
        if full in ("SIGKILL", "SIGSTOP") or not hasattr(signal.Signals, full):
            raise ValueError(f"--preemption_signals: {name!r} is not a signal a process can handle (e.g. SIGTERM).")
        parsed.append(signal.Signals[full])
    return parsed


def ignore_in_worker(signals: list[signal.Signals], worker_id: int | None = None) -> None:
    """A data loader's worker_init_fn: ignore the preemption signals (a signal to the process group reaches the
    workers too; they end when the main process closes them)."""
    for sig in signals:
        signal.signal(sig, signal.SIG_IGN)


def stop_data_workers() -> list[int]:
    """End this process's data-loader workers (SIGKILL); returns their pids. They ignore SIGTERM, which is how
    multiprocessing ends daemonic children at exit: after an error inside a loop, the loader's iterator can stay
    referenced by the traceback, and the exit would wait for its workers forever. Call on the way out of a run."""
    import multiprocessing

    children = multiprocessing.active_children()
    if children:  # torch's SIGCHLD handler would raise "DataLoader worker ... is killed" into this exit
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in children:
        child.kill()
    for child in children:
        child.join(timeout=10)
    return [child.pid for child in children]


class PreemptionHandler:
    """Records the first preemption signal; `stop_requested` tells every process whether any received one."""

    def __init__(self, signals: list[signal.Signals], check_every: int = 1):
        if check_every < 1:
            raise ValueError(f"check_every must be at least 1, got {check_every}.")
        self.signals = list(signals)
        self.check_every = check_every
        self._calls = 0
        self.received: signal.Signals | None = None
        self._previous: dict = {}
        self._group = None
        self._pending: tuple | None = None  # (work, tensor) of the reduction started at the previous call
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # a host-side group: with NCCL training, the flag still travels without touching the GPU stream
            self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
            self._distributed = True
        else:
            self._distributed = False

    def install(self) -> PreemptionHandler:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._record)
        return self

    def restore(self) -> None:
        """The handlers from before `install` (idempotent: call it on every way out of a run)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
        if self._pending is not None:  # no reduction is left running when the process group goes
            self._pending[0].wait()
            self._pending = None

    def _record(self, signum, frame) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
            return
        # a second signal: the user (or the scheduler) will not wait for the step to end
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def stop_requested(self) -> signal.Signals | None:
        """The signal that any process received, or None. With several processes this is a collective: every
        process must call it at the same points."""
        number = int(self.received) if self.received is not None else 0
        if self._distributed:
            self._calls += 1
            if self._calls % self.check_every:
                return None
            agreed = 0
            if self._pending is not None:
                work, flag = self._pending
                work.wait()  # started a step ago: done by now
                agreed = int(flag.item())
            flag = torch.tensor([number], dtype=torch.int64)
            self._pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True), flag)
            number = agreed
        return signal.Signals(number) if number else None

    def agreed_signal(self) -> signal.Signals | None:
        """The signal that any process has received so far, agreed now: with several processes a blocking
        all-reduce (after the one in flight), at a point where every process calls it (the end of an evaluation,
        where the periodic check of `stop_requested` may not have come round yet)."""
        number = int(self.received) if self.received is not None else 0
        if self._distributed:
            if self._pending is not None:
                work, flag = self._pending
                work.wait()
                number = max(number, int(flag.item()))
                self._pending = None
            flag = torch.tensor([number], dtype=torch.int64)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
            number = int(flag.item())
        return signal.Signals(number) if number else None
