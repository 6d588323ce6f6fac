"""Classify image files with a saved classifier, from the command line.

    python -m swin_tiny_hf.predict --model DIR image.png [more.jpg ...] [--top_k 5]

It prints, for each file, the `top_k` classes with their probabilities. The files are decoded and brought to
the model's input exactly as training and the saved folder's pipeline do (`SwinTinyImageClassificationPipeline`:
the training decoder, 16-bit images scaled, not clipped); a file that cannot be read is named.
"""

from __future__ import annotations

import argparse

from transformers import AutoImageProcessor, AutoModelForImageClassification

from .pipeline_swin_tiny import SwinTinyImageClassificationPipeline


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a save_pretrained folder (or Hub id) of an image classifier")
    parser.add_argument("images", nargs="+", help="image files (or URLs)")
    parser.add_argument("--top_k", type=int, default=5, help="how many classes to print per image")
    return parser


def predict(model: str, images: list[str], top_k: int = 5) -> list[list[dict]]:
    """[{"label", "score"}, ...] (best first) for each image."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    classifier = AutoModelForImageClassification.from_pretrained(model).eval()
    classify = SwinTinyImageClassificationPipeline(
        model=classifier, image_processor=AutoImageProcessor.from_pretrained(model)
    )
    top_k = min(top_k, classifier.config.num_labels)
    return [classify(image, top_k=top_k) for image in images]


def main(argv: list[str] | None = None) -> list[list[dict]]:
    args = get_args_parser().parse_args(argv)
    predictions = predict(args.model, args.images, args.top_k)
    for image, best in zip(args.images, predictions):
        print(image)
        for entry in best:
            print(f"  {entry['score']:.4f}  {entry['label']}")
    return predictions


if __name__ == "__main__":
    main()
