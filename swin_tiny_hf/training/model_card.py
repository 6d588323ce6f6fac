"""The model card (README.md of a saved model folder), rendered from the project's model_card.md template.

huggingface_hub's `ModelCard` writes the YAML metadata the Hub reads (library, tags, datasets,
metrics, model-index results); the template adds the recipe and the figures of the run.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "model_card.md"


def render_model_card(
    model_name: str,
    dataset_name: str,
    results: dict[str, float],
    recipe: dict,
    history: list[dict],
    template_path: str | Path = DEFAULT_TEMPLATE,
    repo_id: str | None = None,
) -> ModelCard:
    """results: eval_accuracy, eval_top5_accuracy, eval_loss, eval_samples (as in all_results.json)."""
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
        datasets=[dataset_name],
        metrics=["accuracy"],
        eval_results=eval_results,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id or model_name,
        dataset_name=dataset_name,
        results=results,
        recipe=recipe,
        history=history,
    )
