"""What a run leaves besides its checkpoints: the model folders (best/ and the final model, each with its image
processor and model card), all_results.json, the training curves, and the push of best/ to the Hub. Every write
is atomic (`checkpointing.write_atomically`): a full disk leaves what was there before, whole."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from swin_tiny_hf import save_model_and_processor
from swin_tiny_hf.training.checkpointing import write_atomically, write_json_output, write_model_in_place
from swin_tiny_hf.training.evaluation import results_summary
from swin_tiny_hf.training.model_card import render_model_card
from swin_tiny_hf.training.run_state import RunState

NOT_IN_THE_CARD = ("hub_token", "output_dir")


@dataclass(frozen=True)
class CardFacts:
    """What a saved folder's model card says about the run beyond its results and history."""

    model_name: str
    dataset_name: str  # a Hub id, "digits", or the path of an image folder
    recipe: dict  # the run's settings, as the card lists them
    repo_id: str | None = None  # where --push_to_hub puts it
    base_model: str | None = None  # --model_name_or_path

    @classmethod
    def from_args(cls, args: argparse.Namespace, resume_changes: list[dict]) -> CardFacts:
        recipe = {k: v for k, v in vars(args).items() if k not in NOT_IN_THE_CARD}
        if resume_changes:
            recipe["resumed_with_changes"] = resume_changes
        name = args.hub_model_id or Path(args.output_dir).name
        return cls(
            model_name=name,
            # image folders are named by their path: --dataset_name (a default) was not read
            dataset_name=args.dataset_name if args.train_dir is None else os.path.abspath(args.train_dir),
            recipe=recipe,
            repo_id=name if args.push_to_hub else None,
            base_model=args.model_name_or_path,
        )


def save_training_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in history], label="train (mixed targets)")
    loss_axis.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axis.plot(epochs, [r["train_acc"] for r in history], label="train")
    accuracy_axis.plot(epochs, [r["val_top1"] for r in history], label="validation top-1")
    accuracy_axis.plot(epochs, [r["val_top5"] for r in history], label="validation top-5")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_model_folder(
    model, image_processor, folder: Path, card: CardFacts, results: dict, history: list[dict], local_path: Path
) -> None:
    """save_pretrained (weights, config, remote code), image processor and model card into `folder`, a temporary
    one (`write_atomically`, `write_model_in_place` put it in place); the card loads it from `local_path`."""
    save_model_and_processor(model, folder, image_processor)
    render_model_card(
        model_name=card.model_name,
        dataset_name=card.dataset_name,
        results=results,
        recipe=card.recipe,
        history=history,
        repo_id=card.repo_id,
        base_model=card.base_model,
        local_path=local_path,
    ).save(folder / "README.md")


def write_final_outputs(
    model, image_processor, output_dir: Path, card: CardFacts, state: RunState, results: dict, train_seconds: float
) -> dict:
    """Main process: the final model in output_dir, all_results.json and the curves. Returns all_results. A write
    that fails (a full disk) raises OutputWriteError and leaves nothing half-written."""
    # `results` is the last evaluation, the one recorded as the last history row.
    all_results = results_summary(
        results,
        train_runtime=train_seconds,
        epoch=state.history[-1]["epoch"],
        best_eval_accuracy=state.best_top1,
        time_to_first_step_seconds=state.time_to_first_step_seconds,
        bad_images={
            "dropped_at_start": state.dropped_at_start,
            "skipped_in_training_per_epoch": [row.get("skipped_images", 0) for row in state.history],
            "listed": state.bad_images,
        },
    )
    write_model_in_place(  # output_dir/final, and a link in output_dir to each of its files
        output_dir,
        lambda folder: save_model_folder(
            model, image_processor, folder, card, all_results, state.history, local_path=output_dir
        ),
        "the final model",
    )
    write_json_output(output_dir / "all_results.json", all_results, "the results")
    write_atomically(
        output_dir / "training_curves.png",
        lambda path: save_training_curves(state.history, path),
        "the training curves",
    )
    return all_results


def push_to_hub(folder: Path, repo_id: str, token: str | None, message: str) -> str:
    """Upload `folder` to the Hub model repository `repo_id` (created if missing); returns its full id."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, exist_ok=True).repo_id
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=message)
    return repo_id
