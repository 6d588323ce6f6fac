"""Skip optimizer steps with a non-finite loss, and stop a run of them, without a host-device sync per step.

The obvious guard, `if not loss.isfinite().item(): skip`, reads a GPU value on the CPU every step:
`.item()` waits for every kernel queued so far, so the CPU can no longer launch step k+1 while the GPU
runs step k, and the GPU idles between steps. Everything here stays on the device instead:

- `observe` ORs each micro-batch's non-finite loss into a flag of the current optimizer step;
- `arm`, before the step, reduces the flag over processes and hands it to the fused optimizer as
  `found_inf`, the device-side skip that torch's GradScaler uses: fused AdamW then leaves weights,
  moments and step count as they were. Under fp16 the GradScaler sets `found_inf` itself, from the same
  non-finite gradients, and this guard only counts;
- `disarm`, after the step, updates two device counters: the current run of consecutive skipped steps,
  and whether a run ever reached the limit;
- `check` reads them on the host (one sync) where the loop syncs anyway, at logging intervals, before a
  checkpoint and at the end of an epoch, and raises if the limit was reached.

With gradient accumulation, a non-finite loss in any micro-batch skips the whole optimizer step (its
accumulated gradient holds the NaN).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import Accelerator

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """`max_consecutive` optimizer steps in a row had a non-finite loss."""


class NonFiniteGuard:
    def __init__(self, max_consecutive: int, device: torch.device, initial_run: int = 0, output_dir: str = "."):
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be at least 1, got {max_consecutive}.")
        self.max_consecutive = max_consecutive
        self.output_dir = Path(output_dir)
        # one device tensor: [this step saw a non-finite loss, current run, limit reached, skipped steps in total]
        self.counters = torch.tensor([0.0, float(initial_run), 0.0, 0.0], device=device)
        self.reported_skips = 0
        self._found_inf: torch.Tensor | None = None  # (1,) the reduced flag of the step being taken
        self._set_on: object | None = None  # the optimizer whose found_inf this guard set

    def observe(self, loss: torch.Tensor) -> torch.Tensor:
        """Record one micro-batch's loss; returns whether it is finite, as a device bool for the running sums."""
        finite = torch.isfinite(loss.detach())
        self.counters[0] = torch.maximum(self.counters[0], (~finite).to(self.counters.dtype))
        return finite

    def arm(self, optimizer, accelerator: Accelerator) -> None:
        """Before the optimizer step that closes an accumulation: skip it on every process if any saw a NaN/inf."""
        self._found_inf = accelerator.reduce(self.counters[:1].clone(), reduction="sum").clamp_(max=1.0)  # (1,)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps torch's
        if getattr(optimizer, "scaler", None) is not None:
            return  # fp16: the GradScaler sets found_inf from the (then non-finite) gradients
        if not getattr(inner, "_step_supports_amp_scaling", False):
            raise ValueError(
                f"NonFiniteGuard needs an optimizer that skips steps on the device (found_inf), such as "
                f"torch.optim.AdamW(fused=True); got {type(inner).__name__}."
            )
        inner.found_inf = self._found_inf.view(())  # read by the fused kernel: 1.0 skips the update
        self._set_on = inner

    def disarm(self) -> None:
        """After the optimizer step: update the run counters on the device, clear the step's flag."""
        if self._set_on is not None:
            del self._set_on.found_inf
            self._set_on = None
        skipped = self._found_inf[0]
        run = (self.counters[1] + 1) * skipped  # consecutive skipped steps; a good step resets it to 0
        self.counters[1] = run
        self.counters[2] = torch.maximum(self.counters[2], (run >= self.max_consecutive).to(run.dtype))
        self.counters[3] += skipped
        self.counters[0] = 0.0

    def check(self, completed_steps: int) -> int:
        """Read the counters on the host (a sync). Raises NonFiniteLossError if a run reached the limit; returns
        the current run of consecutive skipped steps (for the checkpoint)."""
        _, run, reached, skipped = (int(v) for v in self.counters.tolist())
        if skipped > self.reported_skips:
            logger.warning(
                "%d optimizer steps had a non-finite loss and were skipped (up to step %d; %d in a row now)",
                skipped - self.reported_skips,
                completed_steps,
                run,
            )
            self.reported_skips = skipped
        if reached:
            raise NonFiniteLossError(
                f"{self.max_consecutive} consecutive steps had a non-finite loss; stopping. The last complete "
                f"checkpoint in {str(self.output_dir)!r} is kept, and holds finite weights (resume with "
                "--resume_from_checkpoint latest, e.g. with --resume_with_changes and a lower --learning_rate)."
            )
        return run
