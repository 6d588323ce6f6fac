"""The training recipe that `train.py` runs: everything a saved model does not need. `train.py` holds only the
order of the phases and how each way of stopping ends the process; each concept is a module here.

The run, in the order train.py goes through it:
- `flags.py`: the flags, one declaration each (type, range, and whether a resume may change it), and their rules
  across flags; `flag_types.py`: the argparse types that check a flag's range where it is read.
- `accelerator.py`: the accelerator, the mixed precision `auto` resolves to (and why), fp16 on a CPU.
- `output_folder.py`: one run per output folder (a lock), and no run that mixes its files with another's.
- `loaders.py`: the two splits loaded, cut and checked, and the training and evaluation data loaders.
- `starting_model.py`: the model to train (new, or --model_name_or_path's weights) and its image processor.
- `optimization.py`: AdamW parameter groups, the warmup + cosine schedule, the learning rate for the global batch.
- `resume.py`: what a resume may change, and the state a run starts from (fresh or from a checkpoint);
  `resume_position.py`: where a run stands in its data (in samples), and where a resume with other batch settings
  goes on from.
- `run_state.py`: the typed run state that training_state.json holds.
- `loop.py`: the optimizer steps of an epoch, and the epochs of a run (train, evaluate, record, checkpoint).
- `evaluation.py`: validation loss, top-1 and top-5 over every process.
- `artifacts.py`: the model folders (best/, the final model) with their card, all_results.json, the curves, the push.
- `next_steps.py`: what a finished run tells its user: where the model is, and the commands that go on.

What those use:
- `data.py`: loading image-classification datasets (Hub, digits, save_to_disk, image folders) and decoding.
- `data_checks.py`: the checks of the data before the first step, and the record of bad images.
- `transforms.py`: the lazy `with_transform` transforms of the training and validation splits.
- `batch_augmentation.py`: the reference augmentation, run on a whole batch with per-image parameters.
- `collate.py`: the Mixup/CutMix collator with label smoothing, and the evaluation collator.
- `seeding.py`: per-batch seeds, so that augmentation and mixing replay exactly on resume.
- `nonfinite_guard.py`: skipping and counting non-finite-loss steps on the device, without a sync per step.
- `checkpointing.py`: crash-safe checkpoint folders and atomic outputs, their names, write order and retention.
- `preemption.py`: stopping at an optimizer step after a checkpoint when SIGTERM/SIGUSR1 comes.
- `model_card.py` (+ `model_card.md`, a link to the repository's template): the model card of a saved folder.
- `top_k_accuracy.py`: an offline `evaluate` metric.
- `synthetic_dataset.py`: a generated dataset with Tiny ImageNet's shape in the Hub's layout, for offline
  rehearsals of a full-scale run (`python -m swin_tiny_hf.training.synthetic_dataset`, in the README).

The model modules (`swin_tiny_hf/*.py`) never import this package: a saved model folder carries the
model's files only.
"""
