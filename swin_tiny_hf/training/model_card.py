"""The model card (README.md of a saved model folder), rendered from the project's model_card.md template.

huggingface_hub's `ModelCard` writes the YAML metadata the Hub reads (library, tags, datasets,
metrics, model-index results); the template adds the recipe and the figures of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

# the repository's model_card.md, through the link beside this file (a wheel holds a copy of it there)
DEFAULT_TEMPLATE = Path(__file__).parent / "model_card.md"


def render_model_card(
    model_name: str,
    dataset_name: str,
    results: dict[str, float],
    recipe: dict,
    history: list[dict],
    template_path: str | Path = DEFAULT_TEMPLATE,
    repo_id: str | None = None,
    base_model: str | None = None,
    local_path: str | os.PathLike | None = None,
) -> ModelCard:
    """results: eval_accuracy, eval_top5_accuracy, eval_loss, eval_samples (as in all_results.json).

    The card's usage code loads `repo_id` (the Hub repository it is pushed to) if given, else `local_path` (the
    folder, as an absolute path, so that the code works as printed from any directory), else `model_name`.
    `base_model`: the checkpoint the run started from (a fine-tune), None for a model trained from scratch; the
    card's metadata names it only where it is a Hub id (the Hub refuses a local path there)."""
    if repo_id is None and local_path is None:
        raise ValueError("a model card needs the model's repo_id (once pushed) or local_path to show how to load it")
    template_path = Path(template_path)
    if not template_path.is_file():
        raise ValueError(f"model card template {str(template_path)!r} not found.")
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset_name,
            dataset_name=dataset_name,
            dataset_split="validation",
            metric_type=metric,
            metric_name=label,
            metric_value=round(float(results[key]), 4),
        )
        for key, metric, label in (
            ("eval_accuracy", "accuracy", "Top-1 accuracy"),
            ("eval_top5_accuracy", "top_5_accuracy", "Top-5 accuracy"),
        )
    ]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        license="apache-2.0",
        tags=["image-classification", "swin", "swin_tiny_hf", "custom_code"],
        datasets=[dataset_name] if is_hub_id(dataset_name) else None,  # the Hub links only its own datasets
        metrics=["accuracy"],
        eval_results=eval_results,
        base_model=base_model if base_model and is_hub_id(base_model) else None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        model_path=repo_id or str(Path(local_path).resolve()),
        base_model=base_model,
        dataset_name=dataset_name,
        results=results,
        recipe=recipe,
        history=history,
    )


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id ("user/model", "model") rather than a local folder."""
    if os.path.exists(name) or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
