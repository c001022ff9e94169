"""The iris trainer under SageMaker's training container contract: `python models/iris/trainer.py` in a
subprocess with the /opt/ml layout in a temporary directory, as SageMaker (or local mode's runner) runs it."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "models" / "iris" / "trainer.py"
TIMEOUT = 60


@dataclass
class Container:
    root: Path

    @property
    def channel(self) -> Path:
        return self.root / "input" / "data" / "train"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SM_CHANNEL_TRAIN": str(self.channel),
            "SM_INPUT_CONFIG_DIR": str(self.root / "input" / "config"),
            "SM_MODEL_DIR": str(self.model),
            "SM_OUTPUT_DATA_DIR": str(self.root / "output" / "data"),
            "SLUICE_CHECKPOINT_DIR": str(self.checkpoints),
            "TRAINING_JOB_NAME": "iris-test-1",
            "PYTHONUNBUFFERED": "1",
        }

    def hyperparameters(self, **values: str) -> None:
        config = self.root / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(values))

    def data(self, text: str, name: str = "iris.csv") -> None:
        self.channel.mkdir(parents=True, exist_ok=True)
        (self.channel / name).write_text(text)

    def paths(self) -> Any:
        from trainer import Paths

        return Paths.from_env(self.env())

    def run(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(TRAINER)], env=self.env(), capture_output=True, text=True, timeout=TIMEOUT, check=False
        )


def _iris_csv(label=lambda names, t: names[t]) -> str:
    iris = load_iris()
    return "".join(
        f"{label(iris.target_names, t)}," + ",".join(str(v) for v in row) + "\n"
        for row, t in zip(iris.data, iris.target, strict=True)
    )


@pytest.fixture
def container(tmp_path) -> Container:
    box = Container(tmp_path)
    box.data(_iris_csv())
    return box


@pytest.fixture
def iris_modules(monkeypatch):
    """serve.py and train.py as the model server imports them (its directory on sys.path)."""
    monkeypatch.syspath_prepend(str(ROOT / "models" / "iris"))
    return importlib.import_module("train"), importlib.import_module("serve")


@pytest.fixture
def trainer(iris_modules):
    """trainer.py in this process, for the cases that need no process of their own."""
    return importlib.import_module("trainer")


def _epochs(stdout: str) -> list[int]:
    return [int(n) for n in re.findall(r"^epoch (\d+)/\d+ ", stdout, re.MULTILINE)]


def test_a_fresh_run_trains_every_epoch_checkpoints_and_saves_a_servable_artifact(container, iris_modules):
    train, serve = iris_modules
    container.hyperparameters(epochs="5", checkpoint_every="2")

    result = container.run()

    assert result.returncode == 0, result.stderr
    assert _epochs(result.stdout) == [1, 2, 3, 4, 5]
    assert re.findall(r"checkpoint saved: epoch (\d+)", result.stdout) == ["2", "4", "5"]
    assert not re.search(r"resumed from epoch ([0-9]+)", result.stdout)
    assert len(re.findall(r"train:loss=[0-9.]+ validation:accuracy=[0-9.]+", result.stdout)) == 5
    # The newest two are kept, and no temporary is left behind.
    assert sorted(p.name for p in container.checkpoints.iterdir()) == [
        "checkpoint-epoch-000004.joblib",
        "checkpoint-epoch-000005.joblib",
    ]
    artifact = train.load(container.model)  # the loader serve.py uses
    assert artifact["version"] == "iris-test-1"
    assert artifact["classes"] == ["setosa", "versicolor", "virginica"]
    answer = serve.predict(artifact, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]
    assert answer["model_version"] == "iris-test-1"


def test_a_resumed_run_trains_only_the_rest_and_ends_with_the_uninterrupted_model(tmp_path, trainer, capsys):
    train = sys.modules["train"]
    resumed, straight = Container(tmp_path / "resumed"), Container(tmp_path / "straight")
    for box in (resumed, straight):
        box.data(_iris_csv())
    resumed.hyperparameters(epochs="4")
    assert trainer.run(resumed.paths()) == 4
    capsys.readouterr()

    resumed.hyperparameters(epochs="9")
    assert trainer.run(resumed.paths()) == 9
    second = capsys.readouterr().out
    straight.hyperparameters(epochs="9")
    assert trainer.run(straight.paths()) == 9

    assert "resumed from epoch 4" in second
    assert _epochs(second) == [5, 6, 7, 8, 9]
    rows = load_iris().data
    np.testing.assert_allclose(
        train.load(resumed.model)["model"].predict_proba(rows), train.load(straight.model)["model"].predict_proba(rows)
    )


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(container, trainer, capsys):
    container.hyperparameters(epochs="3")
    assert trainer.run(container.paths()) == 3
    (container.checkpoints / "checkpoint-epoch-000003.joblib").write_bytes(b"torn write")
    capsys.readouterr()

    assert trainer.run(container.paths()) == 3

    out = capsys.readouterr().out
    assert "resumed from epoch 2" in out
    assert _epochs(out) == [3]


@pytest.mark.parametrize(
    "label", [lambda names, t: str(t), lambda names, t: f"{float(t)}", lambda names, t: f"Iris-{names[t]}"]
)
def test_labels_may_be_class_numbers_or_uci_names(container, trainer, label):
    container.data(_iris_csv(label))
    container.hyperparameters(epochs="1")

    assert trainer.run(container.paths()) == 1


def test_bad_data_exits_non_zero_with_the_reason_in_the_failure_file(container):
    container.data("setosa,5.1,3.5,1.4,0.2\nsetosa,5.1,3.5\n")

    result = container.run()

    reason = "train channel file iris.csv, line 2: expected 5 comma-separated values"
    assert result.returncode == 1
    assert container.failure.read_text().startswith(reason)
    assert reason in result.stderr
    assert not (container.model / "model.joblib").exists()


@pytest.mark.parametrize(
    ("data", "hyperparameters", "reason"),
    [
        ("sepal,5.1,3.5,1.4,0.2\n", {}, "iris.csv, line 1: the label 'sepal' is neither a species"),
        ("setosa,5.1,x,1.4,0.2\n", {}, "iris.csv, line 1: the measurements must be numbers"),
        ("setosa,5.1,inf,1.4,0.2\n", {}, "iris.csv, line 1: the measurements must be finite numbers"),
        ("", {}, "holds no CSV rows"),
        ("setosa,5.1,3.5,1.4,0.2\nvirginica,6.7,3.0,5.2,2.3\n", {}, "cannot hold out a stratified validation split"),
        (None, {"epochs": "many"}, "hyperparameter epochs must be an integer, got 'many'"),
        (None, {"checkpoint_every": "0"}, "hyperparameter checkpoint_every must be >= 1"),
        (None, {"validation_fraction": "1.5"}, "validation_fraction must be between 0 and 1"),
    ],
)
def test_bad_input_is_an_algorithm_error_saying_what_is_wrong(container, trainer, data, hyperparameters, reason):
    if data is not None:
        container.data(data)
    container.hyperparameters(**hyperparameters)

    with pytest.raises(trainer.AlgorithmError, match=re.escape(reason)):
        trainer.run(container.paths())
    assert not (container.model / "model.joblib").exists()


def test_sigterm_stops_after_the_current_epoch_with_a_checkpoint_and_a_model(container, iris_modules):
    train, _ = iris_modules
    container.hyperparameters(epochs="1000000", checkpoint_every="1000")
    process = subprocess.Popen([sys.executable, str(TRAINER)], env=container.env(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("epoch 3/"):
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == 0
    last = re.findall(r"checkpoint saved: epoch (\d+)", rest)
    assert len(last) == 1  # the stop's own, before the 1000th epoch
    assert f"stopped after epoch {last[0]} of 1000000" in rest
    assert train.load(container.model)["epochs"] == int(last[0])
