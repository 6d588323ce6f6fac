"""Per-batch seeds: the recipe's randomness as a function of (run seed, epoch or step, rows, stream).

The augmentation (`transforms.py`), the Mixup/CutMix draw (`collate.py`) and the model's own
randomness in `train.py` (drop path, dropout) each draw from a generator seeded here instead of the
process's global RNG. The same batch then gets the same draws whatever the number of data-loader
workers, and a resumed run replays exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import numpy as np


def batch_seed(seed: int, epoch: int, rows: list[int], stream: int = 0) -> int:
    """A 63-bit seed that depends on the run's seed, the epoch, the batch's rows and a stream id."""
    return int(np.random.SeedSequence([seed, epoch, stream, *rows]).generate_state(2, np.uint64)[0] >> 1)
