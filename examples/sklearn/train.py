"""Train a small real scikit-learn model (iris, LogisticRegression) and save model.joblib.

python examples/sklearn/train.py [OUTPUT_DIR]   (default: examples/build/sklearn/model)
"""

from __future__ import annotations

import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def train(output_dir: Path) -> Path:
    features, labels = load_iris(return_X_y=True)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    model.fit(features, labels)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / "model.joblib"
    joblib.dump(model, path)
    print(f"trained on {len(labels)} iris samples, accuracy {model.score(features, labels):.3f}")
    return path


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "build" / "sklearn" / "model"
    train(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
