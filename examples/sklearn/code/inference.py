"""Iris classifier: the scikit-learn container's conventions.

Input: JSON (``[[5.1, 3.5, 1.4, 0.2], ...]`` or ``{"instances": [...]}``), CSV rows or NPY.
Output (Accept): JSON ``{"predictions": [0, ...], "labels": ["setosa", ...]}`` by default,
or CSV / NPY of the class indices.
"""

from __future__ import annotations

import json
import os

import joblib
import numpy as np

LABELS = ["setosa", "versicolor", "virginica"]


def model_fn(model_dir: str):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(input_data, content_type):
    if content_type and content_type.startswith("application/json"):
        data = json.loads(input_data)
        if isinstance(data, dict):
            data = data.get("instances", data.get("inputs"))
        return np.atleast_2d(np.asarray(data, dtype=float))
    if content_type and content_type.startswith("text/csv"):
        return np.atleast_2d(np.genfromtxt(input_data.splitlines(), delimiter=",", dtype=float))
    if content_type == "application/x-npy":
        import io

        return np.atleast_2d(np.load(io.BytesIO(input_data), allow_pickle=False))
    raise ValueError(f"unsupported content type {content_type!r}: use JSON, CSV or NPY")


def predict_fn(data, model):
    return model.predict(data)


def output_fn(prediction, accept):
    if accept.startswith("text/csv"):
        return "\n".join(str(int(p)) for p in prediction) + "\n", "text/csv"
    if accept == "application/x-npy":
        import io

        buffer = io.BytesIO()
        np.save(buffer, prediction)
        return buffer.getvalue(), "application/x-npy"
    body = {
        "predictions": [int(p) for p in prediction],
        "labels": [LABELS[int(p)] for p in prediction],
    }
    return json.dumps(body), "application/json"
