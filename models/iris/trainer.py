"""Train the iris classifier in epochs under SageMaker's training container contract, checkpointing as it goes.

SageMaker (and local mode's training runner) starts the container with this layout:

    /opt/ml/input/data/train/          the `train` channel: CSV files, label first, then the 4 measurements
    /opt/ml/input/config/hyperparameters.json   {"epochs": "40", ...}: every value a string
    /opt/ml/checkpoints/               synced with CheckpointConfig.S3Uri: filled before start, uploaded as it changes
    /opt/ml/model/                     uploaded as model.tar.gz when the job succeeds
    /opt/ml/output/failure             the FailureReason when the job fails

The checkpoint contract (what makes a spot retry resume instead of restarting from zero):

- after every `checkpoint_every` epochs a checkpoint is written atomically (temporary file, then rename) and
  the log says `checkpoint saved: epoch K`; the newest two are kept;
- at start the newest readable checkpoint is loaded and the log says `resumed from epoch K`; only the remaining
  epochs are trained (a fresh start logs `no checkpoint: starting from epoch 0`, which that regex does not match);
- SIGTERM (a stop, or a spot reclaim's two-minute warning) ends training after the current epoch, with a
  checkpoint and a model of what was trained so far.

Every epoch logs `epoch K/N train:loss=<x> validation:accuracy=<x>` for the metric definitions.
Training is deterministic: a fixed seed, the data shuffled per epoch with seed + epoch, so a resumed run
ends with the model an uninterrupted one would have.

Hyperparameters: epochs (40), checkpoint_every (1), learning_rate (0.1), seed (0), validation_fraction (0.2).
Environment: SM_CHANNEL_TRAIN, SM_INPUT_CONFIG_DIR, SM_MODEL_DIR, SM_OUTPUT_DIR (as SageMaker's training
toolkit names them) and SLUICE_CHECKPOINT_DIR override the paths above; TRAINING_JOB_NAME (set by SageMaker)
becomes the served model's version.

    python models/iris/trainer.py
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
import train
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CLASSES = ("setosa", "versicolor", "virginica")
# The names train.py's artifacts carry (scikit-learn's iris feature names), so both kinds of artifact read alike.
FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
CHECKPOINT_FORMAT = 1
KEEP_CHECKPOINTS = 2
_CHECKPOINT_NAME = re.compile(r"^checkpoint-epoch-(\d+)\.joblib$")
DEFAULTS = {"epochs": "40", "checkpoint_every": "1", "learning_rate": "0.1", "seed": "0", "validation_fraction": "0.2"}

log = logging.getLogger("iris.trainer")


class AlgorithmError(Exception):
    """Training cannot go on (bad data or hyperparameters); the message becomes the job's FailureReason."""


@dataclass(frozen=True)
class Paths:
    train: Path
    config: Path
    model: Path
    checkpoints: Path
    output: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Paths:
        env = dict(os.environ if env is None else env)
        output = env.get("SM_OUTPUT_DIR") or (
            str(Path(env["SM_OUTPUT_DATA_DIR"]).parent) if env.get("SM_OUTPUT_DATA_DIR") else "/opt/ml/output"
        )
        return cls(
            train=Path(env.get("SM_CHANNEL_TRAIN") or "/opt/ml/input/data/train"),
            config=Path(env.get("SM_INPUT_CONFIG_DIR") or "/opt/ml/input/config"),
            model=Path(env.get("SM_MODEL_DIR") or "/opt/ml/model"),
            checkpoints=Path(env.get("SLUICE_CHECKPOINT_DIR") or "/opt/ml/checkpoints"),
            output=Path(output),
        )


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    checkpoint_every: int
    learning_rate: float
    seed: int
    validation_fraction: float

    @classmethod
    def read(cls, config_dir: Path) -> Hyperparameters:
        path = config_dir / "hyperparameters.json"
        given: dict[str, Any] = {}
        if path.exists():
            try:
                given = json.loads(path.read_text())
            except ValueError as exc:
                raise AlgorithmError(f"{path} is not JSON: {exc}") from None
            if not isinstance(given, dict):
                raise AlgorithmError(f"{path} must hold a JSON object of hyperparameters")
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            # SageMaker adds hyperparameters of its own for some tools; ignoring beats failing the job.
            log.warning("ignoring unknown hyperparameters: %s", ", ".join(unknown))
        values = {**DEFAULTS, **{k: str(v) for k, v in given.items() if k in DEFAULTS}}
        hp = cls(
            epochs=_integer(values, "epochs", 1),
            checkpoint_every=_integer(values, "checkpoint_every", 1),
            learning_rate=_number(values, "learning_rate"),
            seed=_integer(values, "seed", 0),
            validation_fraction=_number(values, "validation_fraction"),
        )
        if hp.learning_rate <= 0:
            raise AlgorithmError(f"hyperparameter learning_rate must be > 0, got {values['learning_rate']!r}")
        if not 0 < hp.validation_fraction < 1:
            raise AlgorithmError(
                f"hyperparameter validation_fraction must be between 0 and 1, got {values['validation_fraction']!r}"
            )
        return hp


def _integer(values: dict[str, str], name: str, minimum: int) -> int:
    try:
        value = int(values[name])
    except ValueError:
        raise AlgorithmError(f"hyperparameter {name} must be an integer, got {values[name]!r}") from None
    if value < minimum:
        raise AlgorithmError(f"hyperparameter {name} must be >= {minimum}, got {value}")
    return value


def _number(values: dict[str, str], name: str) -> float:
    try:
        value = float(values[name])
    except ValueError:
        raise AlgorithmError(f"hyperparameter {name} must be a number, got {values[name]!r}") from None
    if not math.isfinite(value):
        raise AlgorithmError(f"hyperparameter {name} must be finite, got {values[name]!r}")
    return value


# ---------------------------------------------------------------------- data


def _label(text: str, where: str) -> int:
    name = text.strip().strip('"').lower()
    # The UCI file spells them "Iris-setosa".
    name = name.removeprefix("iris-")
    if name in CLASSES:
        return CLASSES.index(name)
    try:
        number = float(name)
    except ValueError:
        number = math.nan
    if number in (0.0, 1.0, 2.0):
        return int(number)
    raise AlgorithmError(f"{where}: the label {text.strip()!r} is neither a species ({', '.join(CLASSES)}) nor 0-2")


def read_channel(channel: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every CSV row of every file under the channel (in path order): label, then the 4 measurements."""
    if not channel.is_dir():
        raise AlgorithmError(f"the train channel {channel} does not exist: give the job a `train` input channel")
    files = sorted(p for p in channel.rglob("*") if p.is_file() and not p.name.startswith("."))
    rows: list[list[float]] = []
    labels: list[int] = []
    for path in files:
        name = path.relative_to(channel)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AlgorithmError(f"train channel file {name} is not UTF-8 text (CSV expected)") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"train channel file {name}, line {number}"
            fields = line.split(",")
            if len(fields) != 1 + len(FEATURES):
                raise AlgorithmError(
                    f"{where}: expected {1 + len(FEATURES)} comma-separated values (label, {', '.join(FEATURES)}), "
                    f"got {len(fields)}; CSV has no header row"
                )
            labels.append(_label(fields[0], where))
            try:
                values = [float(field) for field in fields[1:]]
            except ValueError:
                raise AlgorithmError(f"{where}: the measurements must be numbers, got {line.strip()!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise AlgorithmError(f"{where}: the measurements must be finite numbers, got {line.strip()!r}")
            rows.append(values)
    if not rows:
        raise AlgorithmError(f"the train channel {channel} holds no CSV rows ({len(files)} file(s))")
    return np.asarray(rows, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def split(x: np.ndarray, y: np.ndarray, hp: Hyperparameters) -> tuple[np.ndarray, ...]:
    try:
        return tuple(
            train_test_split(x, y, test_size=hp.validation_fraction, stratify=y, random_state=hp.seed, shuffle=True)
        )
    except ValueError as exc:
        counts = {CLASSES[c]: int(n) for c, n in zip(*np.unique(y, return_counts=True), strict=True)}
        raise AlgorithmError(
            f"cannot hold out a stratified validation split of {hp.validation_fraction} from {len(y)} rows "
            f"(rows per class: {counts}): {exc}"
        ) from None


# ---------------------------------------------------------------------- checkpoints


def checkpoint_files(directory: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in `directory`, newest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def save_checkpoint(directory: Path, epoch: int, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint-epoch-{epoch:06d}.joblib"
    # A temporary name the resume ignores, then a rename: a reclaim mid-write never leaves half a checkpoint.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            joblib.dump({"format": CHECKPOINT_FORMAT, "epoch": epoch, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for _, old in checkpoint_files(directory)[KEEP_CHECKPOINTS:]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint that loads; an unreadable one is skipped (a loud warning), not fatal."""
    for epoch, path in checkpoint_files(directory):
        try:
            state = joblib.load(path)
        except Exception as exc:  # noqa: BLE001 - a torn or foreign file: an older checkpoint may still load
            log.warning("checkpoint %s (epoch %d) cannot be read, trying an older one: %s", path.name, epoch, exc)
            continue
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and state.get("epoch") == epoch:
            return state
        log.warning(
            "checkpoint %s is not an iris trainer checkpoint of format %d; skipped", path.name, CHECKPOINT_FORMAT
        )
    return None


# ---------------------------------------------------------------------- training


class _Stop:
    """Set by SIGTERM; training ends after the epoch in progress."""

    requested = False

    @classmethod
    def handle(cls, signum: int, _frame: object) -> None:
        cls.requested = True
        log.info("%s received: stopping after the current epoch", signal.Signals(signum).name)


def _say(message: str) -> None:
    # The log is what the metric regexes read: one line per event, flushed at once.
    print(message, flush=True)


def run(paths: Paths) -> int:
    """Train (or resume); returns the last epoch trained."""
    hp = Hyperparameters.read(paths.config)
    x, y = read_channel(paths.train)
    x_train, x_val, y_train, y_val = split(x, y, hp)
    classes = np.arange(len(CLASSES))

    state = load_checkpoint(paths.checkpoints)
    if state is not None:
        scaler, classifier, epoch = state["scaler"], state["classifier"], state["epoch"]
        _say(f"resumed from epoch {epoch}")
    else:
        scaler = StandardScaler().fit(x_train)
        classifier = SGDClassifier(
            loss="log_loss",
            learning_rate="constant",
            eta0=hp.learning_rate,
            alpha=1e-4,
            random_state=hp.seed,
            shuffle=False,  # shuffled here per epoch, so a resumed run sees the same order as an uninterrupted one
        )
        epoch = 0
        _say("no checkpoint: starting from epoch 0")
    if epoch >= hp.epochs:
        _say(f"checkpoint epoch {epoch} >= epochs {hp.epochs}: nothing left to train")
    scaled_train, scaled_val = scaler.transform(x_train), scaler.transform(x_val)
    saved = epoch
    while epoch < hp.epochs and not _Stop.requested:
        epoch += 1
        order = np.random.default_rng(hp.seed + epoch).permutation(len(y_train))
        classifier.partial_fit(scaled_train[order], y_train[order], classes=classes)
        loss = log_loss(y_train, classifier.predict_proba(scaled_train), labels=classes)
        accuracy = float(classifier.score(scaled_val, y_val))
        _say(f"epoch {epoch}/{hp.epochs} train:loss={loss:.6f} validation:accuracy={accuracy:.6f}")
        if epoch % hp.checkpoint_every == 0 or epoch == hp.epochs or _Stop.requested:
            save_checkpoint(paths.checkpoints, epoch, {"scaler": scaler, "classifier": classifier})
            saved = epoch
            _say(f"checkpoint saved: epoch {epoch}")
    if _Stop.requested:
        _say(f"stopped after epoch {epoch} of {hp.epochs} (latest checkpoint: epoch {saved})")
    model = make_pipeline(scaler, classifier)
    artifact = {
        "format": train.ARTIFACT_FORMAT,
        "version": os.environ.get("TRAINING_JOB_NAME") or "trained",
        "algorithm": type(classifier).__name__,
        "model": model,
        "classes": list(CLASSES),
        "features": list(FEATURES),
        "sklearn_version": sklearn.__version__,
        "train_accuracy": float(model.score(x_train, y_train)),
        "validation_accuracy": float(model.score(x_val, y_val)),
        "epochs": epoch,
    }
    path = train.save(artifact, paths.model)
    _say(f"model saved: {path} (epoch {epoch}, validation:accuracy={artifact['validation_accuracy']:.6f})")
    return epoch


def _fail(paths: Paths, message: str) -> None:
    # SageMaker reads the failure file for the job's FailureReason; stderr keeps it in the log too.
    print(f"training failed: {message}", file=sys.stderr, flush=True)
    try:
        paths.output.mkdir(parents=True, exist_ok=True)
        (paths.output / "failure").write_text(message)
    except OSError as exc:
        print(f"could not write {paths.output / 'failure'}: {exc}", file=sys.stderr, flush=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    signal.signal(signal.SIGTERM, _Stop.handle)
    paths = Paths.from_env()
    try:
        run(paths)
    except AlgorithmError as exc:
        _fail(paths, str(exc))
        return 1
    except Exception as exc:
        log.exception("training failed unexpectedly")
        _fail(paths, f"the iris trainer failed unexpectedly: {type(exc).__name__}: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
