"""The training recipe that `train.py` runs: everything a saved model does not need.

- `data.py`: loading image-classification datasets (Hub, digits, save_to_disk, image folders) and decoding.
- `transforms.py`: the lazy `with_transform` transforms of the training and validation splits.
- `batch_augmentation.py`: the reference augmentation, run on a whole batch with per-image parameters.
- `collate.py`: the Mixup/CutMix collator with label smoothing, and the evaluation collator.
- `seeding.py`: per-batch seeds, so that augmentation and mixing replay exactly on resume.
- `optimization.py`: AdamW parameter groups, the warmup + cosine schedule, learning-rate scaling to the batch.
- `nonfinite_guard.py`: skipping and counting non-finite-loss steps on the device, without a sync per step.
- `checkpointing.py`: crash-safe checkpoint folders, their names, write order and retention.
- `resume_position.py`: where a run stands in its data (in samples), and where a resume with other batch
  settings goes on from.
- `data_checks.py`: the checks of the data before the first step, and the record of bad images.
- `flag_types.py`: argparse types that check a flag's range where it is read (`ranged(int, "[1, inf)")`).
- `preemption.py`: stopping at an optimizer step after a checkpoint when SIGTERM/SIGUSR1 comes.
- `output_folder.py`: one run per output folder (a lock), and no run that mixes its files with another's.
- `resume_changes.py`: the settings a resume may change, and the new optimiser settings applied after one.
- `model_card.py` (+ `model_card.md`, a link to the repository's template): the model card of a saved folder.
- `next_steps.py`: what a finished run tells its user: where the model is, and the commands that go on.
- `top_k_accuracy.py`: an offline `evaluate` metric.
- `synthetic_dataset.py`: a generated dataset with Tiny ImageNet's shape in the Hub's layout, for rehearsals.

The model modules (`swin_tiny_hf/*.py`) never import this package: a saved model folder carries the
model's files only.
"""
