"""Top-k accuracy as an `evaluate` metric that loads from this file, offline.

`evaluate.load("accuracy")` fetches its script from the Hub; `evaluate.load(TOP_K_ACCURACY_PATH)`
needs nothing but this file. Predictions are each sample's k best class ids, best first.
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of samples whose reference label is among the first k predicted class ids."


class TopKAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: list of k class ids per sample, best first; references: class id.",
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, top_k=(1,)):
        if len(references) == 0:
            raise ValueError("no samples to score.")
        results = {}
        for k in top_k:
            if any(len(p) < k for p in predictions):
                raise ValueError(f"each prediction must list at least k={k} class ids.")
            hits = sum(reference in prediction[:k] for prediction, reference in zip(predictions, references))
            results[f"top{k}_accuracy"] = hits / len(references)
        return results
