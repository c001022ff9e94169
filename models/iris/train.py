"""Train the sample iris classifier and save it as a joblib artifact.

Two versions exist so that two SageMaker production variants can serve visibly different models:
v1 is a scaled logistic regression, v2 a random forest. Both train in well under a second on the
iris data that ships inside scikit-learn, so nothing is downloaded.

    python models/iris/train.py --model-dir /tmp/iris --version v2
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import joblib
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

ARTIFACT_NAME = "model.joblib"
VERSIONS = ("v1", "v2")
DEFAULT_VERSION = "v1"
# Bumped when the artifact's dict layout changes, so an old file is refused instead of misread.
ARTIFACT_FORMAT = 1

log = logging.getLogger("iris.train")


def _estimator(version: str) -> Any:
    # Fixed seeds and deterministic solvers: the same version always yields the same model.
    if version == "v1":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if version == "v2":
        return RandomForestClassifier(n_estimators=100, random_state=0)
    raise ValueError(f"unknown model version {version!r}; known: {', '.join(VERSIONS)}")


def train(version: str = DEFAULT_VERSION) -> dict[str, Any]:
    """Fit the model for `version` and return the artifact: the estimator plus what serving needs to know."""
    iris = load_iris()
    model = _estimator(version)
    model.fit(iris.data, iris.target)
    return {
        "format": ARTIFACT_FORMAT,
        "version": version,
        "algorithm": type(model[-1] if isinstance(model, Pipeline) else model).__name__,
        "model": model,
        # predict_proba columns follow model.classes_ (0, 1, 2); these are their names in that order.
        "classes": [str(iris.target_names[c]) for c in model.classes_],
        "features": list(iris.feature_names),
        "sklearn_version": sklearn.__version__,
        "train_accuracy": float(model.score(iris.data, iris.target)),
    }


def save(artifact: dict[str, Any], model_dir: Path) -> Path:
    """Write the artifact atomically, so a server starting concurrently never loads half a file."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / ARTIFACT_NAME
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".model-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            joblib.dump(artifact, f)
        # mkstemp makes the file 0600; model data is meant to be readable by whichever user serves it.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(model_dir: Path) -> dict[str, Any]:
    # joblib unpickles: the model directory is trusted (it is the endpoint's own model data).
    artifact = joblib.load(model_dir / ARTIFACT_NAME)
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{model_dir / ARTIFACT_NAME} is not an iris artifact of format {ARTIFACT_FORMAT}")
    if artifact["sklearn_version"] != sklearn.__version__:
        log.warning(
            "artifact was trained with scikit-learn %s, serving with %s",
            artifact["sklearn_version"],
            sklearn.__version__,
        )
    return artifact


def load_or_train(model_dir: Path, version: str | None) -> dict[str, Any]:
    """Load the artifact in `model_dir`, or train and save one there if it holds none.

    `version` None means "whatever is there" (v1 when training). A requested version that differs from
    the stored one is an error rather than a silent retrain: the artifact is the endpoint's model data.
    """
    if (model_dir / ARTIFACT_NAME).exists():
        artifact = load(model_dir)
        if version is not None and artifact["version"] != version:
            raise ValueError(
                f"{model_dir / ARTIFACT_NAME} holds model version {artifact['version']}, "
                f"but version {version} was requested; use another model directory"
            )
        log.info("loaded model %s (%s) from %s", artifact["version"], artifact["algorithm"], model_dir)
        return artifact
    artifact = train(version or DEFAULT_VERSION)
    try:
        path = save(artifact, model_dir)
        log.info("trained model %s (%s), saved to %s", artifact["version"], artifact["algorithm"], path)
    except OSError as exc:
        # A read-only model directory (as SageMaker may mount it) still lets the endpoint serve.
        log.warning("trained model %s but could not save it to %s: %s", artifact["version"], model_dir, exc)
    return artifact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model")))
    parser.add_argument("--version", choices=VERSIONS, default=os.environ.get("SLUICE_MODEL_VERSION") or "v1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    artifact = train(args.version)
    path = save(artifact, args.model_dir)
    print(f"{path}: {artifact['version']} {artifact['algorithm']} train_accuracy={artifact['train_accuracy']:.3f}")


if __name__ == "__main__":
    main()
