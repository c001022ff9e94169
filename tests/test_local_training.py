"""SageMaker training in local mode: training jobs created in the embedded moto (a moto server in this process)
run `models/iris/trainer.py` for real, through real boto3 clients: checkpoints, metrics, stops and injected
spot interruptions as DescribeTrainingJob reports them."""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from sklearn.datasets import load_iris

from sluice_local.artifacts import TrainedModels
from sluice_local.model_lookup import ModelLookup
from sluice_local.sagemaker_runtime import LocalSageMakerRuntime
from sluice_local.training import TrainingRunner, install_training_runner
from sluice_local.transform import install_transform_runner

ROOT = Path(__file__).resolve().parent.parent
TRAINER = ROOT / "models" / "iris" / "trainer.py"
IMAGE = "sluice/iris-trainer:local"
BUCKET = "training-data"
ROLE = "arn:aws:iam::123456789012:role/sluice-local-sagemaker"
INTERRUPT_AT = 3
# A trainer that starts a process of its own and dies without a failure file.
LEAVES_A_CHILD = "example/leaves-a-child:1"
LEAVES_A_CHILD_SCRIPT = (
    "import subprocess, sys; child = subprocess.Popen(['sleep', '600']); print(f'child {child.pid}', flush=True); "
    "sys.exit(3)"
)
POLL_TIMEOUT = 30.0
METRICS = [
    {"Name": "validation:accuracy", "Regex": "validation:accuracy=([0-9.]+)"},
    {"Name": "train:loss", "Regex": "train:loss=([0-9.]+)"},
    {"Name": "sluice:resumed_from_step", "Regex": "resumed from epoch ([0-9]+)"},
    {"Name": "sluice:checkpoint_step", "Regex": "checkpoint saved: epoch ([0-9]+)"},
]


@pytest.fixture(scope="module")
def runner(moto, tmp_path_factory) -> Iterator[TrainingRunner]:
    images = {IMAGE: [sys.executable, str(TRAINER)], LEAVES_A_CHILD: [sys.executable, "-c", LEAVES_A_CHILD_SCRIPT]}
    installed = install_training_runner(
        images.get,
        moto.url,
        interrupt_at_epoch=INTERRUPT_AT,
        state_dir=tmp_path_factory.mktemp("training"),
        stop_grace_seconds=10,
    )
    yield installed
    installed.uninstall()


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="module")
def s3(moto) -> Any:
    client = _client("s3", moto.url)
    client.create_bucket(Bucket=BUCKET)
    iris = load_iris()
    rows = "".join(
        f"{iris.target_names[label]}," + ",".join(str(v) for v in row) + "\n"
        for row, label in zip(iris.data, iris.target, strict=True)
    )
    client.put_object(Bucket=BUCKET, Key="uploads/platform/iris/iris.csv", Body=rows.encode())
    client.put_object(Bucket=BUCKET, Key="uploads/platform/bad/iris.csv", Body=b"setosa,5.1,3.5,1.4,0.2\nsetosa,5.1\n")
    return client


@pytest.fixture(scope="module")
def sagemaker(moto, runner) -> Any:
    return _client("sagemaker", moto.url)


def _create(
    sagemaker: Any,
    *,
    epochs: int = 6,
    spot: bool = False,
    checkpoint: str | None = None,
    data: str = "uploads/platform/iris/",
    image: str = IMAGE,
    max_runtime: int = 600,
    name: str | None = None,
    **extra: Any,
) -> str:
    name = name or f"tj-{uuid.uuid4().hex[:12]}"
    stopping = {"MaxRuntimeInSeconds": max_runtime}
    if spot:
        stopping["MaxWaitTimeInSeconds"] = max_runtime * 2
    params: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File", "MetricDefinitions": METRICS},
        "RoleArn": ROLE,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{data}"}},
                "ContentType": "text/csv",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/training-output/{name}/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spot,
        "CheckpointConfig": {
            "S3Uri": checkpoint or f"s3://{BUCKET}/checkpoints/platform/{name}/",
            "LocalPath": "/opt/ml/checkpoints",
        },
        "HyperParameters": {"epochs": str(epochs), "checkpoint_every": "1"},
        **extra,
    }
    sagemaker.create_training_job(**params)
    return name


def _wait(sagemaker: Any, name: str, until: tuple[str, ...] = ("Completed", "Failed", "Stopped")) -> dict[str, Any]:
    deadline = time.monotonic() + POLL_TIMEOUT
    while time.monotonic() < deadline:
        job = sagemaker.describe_training_job(TrainingJobName=name)
        if job["TrainingJobStatus"] in until:
            return job
        time.sleep(0.05)
    raise AssertionError(f"training job {name} still {job['TrainingJobStatus']} after {POLL_TIMEOUT} s")


def _wait_for_log(runner: TrainingRunner, name: str, text: str) -> None:
    deadline = time.monotonic() + POLL_TIMEOUT
    while time.monotonic() < deadline:
        path = runner.log_path(name)
        if path is not None and path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the log of {name}")


def _metrics(job: dict[str, Any]) -> dict[str, float]:
    return {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])}


def _keys(s3: Any, prefix: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def _secondaries(job: dict[str, Any]) -> list[str]:
    return [t["Status"] for t in job["SecondaryStatusTransitions"]]


def test_a_job_trains_for_real_and_reports_metrics_artifact_and_checkpoints(s3, sagemaker, runner):
    # On demand: never reclaimed, though it passes the epoch the runner reclaims spot jobs at.
    name = _create(sagemaker, epochs=INTERRUPT_AT + 3)
    assert sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] == "InProgress"

    job = _wait(sagemaker, name)

    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    assert job["SecondaryStatus"] == "Completed"
    assert _secondaries(job) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert "FailureReason" not in job
    metrics = _metrics(job)
    assert metrics["sluice:checkpoint_step"] == 6
    assert "sluice:resumed_from_step" not in metrics  # a fresh start
    assert 0.5 < metrics["validation:accuracy"] <= 1.0
    assert metrics["train:loss"] > 0
    # The caller's metric definitions, not moto's sample ones.
    assert job["AlgorithmSpecification"]["MetricDefinitions"] == METRICS
    assert job["TrainingEndTime"] >= job["TrainingStartTime"]
    assert job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"] >= 1
    artifact = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert artifact == f"s3://{BUCKET}/training-output/{name}/{name}/output/model.tar.gz"
    body = s3.get_object(Bucket=BUCKET, Key=artifact.split(f"{BUCKET}/", 1)[1])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.getnames() == ["model.joblib"]
    # The newest two checkpoints the trainer kept, and none of its temporaries; older ones stay in S3.
    checkpoints = _keys(s3, f"checkpoints/platform/{name}/")
    assert f"checkpoints/platform/{name}/checkpoint-epoch-000006.joblib" in checkpoints
    assert not any("/." in key for key in checkpoints)
    assert "checkpoint saved: epoch 6" in runner.log_path(name).read_text()


def test_stop_sends_sigterm_and_the_job_ends_stopped_with_what_it_trained(s3, sagemaker, runner):
    name = _create(sagemaker, epochs=1_000_000)
    _wait_for_log(runner, name, "checkpoint saved: epoch 1\n")

    sagemaker.stop_training_job(TrainingJobName=name)
    assert sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobStatus"] in ("Stopping", "Stopped")
    job = _wait(sagemaker, name)

    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert "Stopping" in _secondaries(job)
    assert "stopped after epoch" in runner.log_path(name).read_text()  # the trainer's SIGTERM handling
    assert _metrics(job)["sluice:checkpoint_step"] >= 1
    assert job["ModelArtifacts"]["S3ModelArtifacts"].endswith(f"/{name}/output/model.tar.gz")
    with pytest.raises(ClientError) as stopped_again:
        sagemaker.stop_training_job(TrainingJobName=name)
    assert stopped_again.value.response["Error"]["Code"] == "ValidationException"


def test_max_runtime_stops_the_job_as_max_runtime_exceeded(s3, sagemaker):
    name = _create(sagemaker, epochs=1_000_000, max_runtime=1)

    job = _wait(sagemaker, name)

    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert job["TrainingTimeInSeconds"] >= 1


def test_a_name_in_use_and_a_wait_below_the_runtime_are_refused(s3, sagemaker):
    name = _create(sagemaker, epochs=1)
    with pytest.raises(ClientError) as in_use:
        _create(sagemaker, epochs=1, name=name)
    assert in_use.value.response["Error"]["Code"] == "ResourceInUse"

    with pytest.raises(ClientError) as short_wait:
        _create(
            sagemaker,
            spot=False,
            EnableManagedSpotTraining=True,
            StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 300},
        )
    assert short_wait.value.response["Error"]["Code"] == "ValidationException"
    assert "MaxWaitTimeInSeconds" in short_wait.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as stop_unknown:
        sagemaker.stop_training_job(TrainingJobName="tj-never-created")
    assert stop_unknown.value.response["Error"]["Code"] == "ValidationException"
    _wait(sagemaker, name)


def test_an_injected_spot_interruption_then_a_retry_that_resumes_from_the_checkpoint(s3, sagemaker, runner):
    checkpoint = f"s3://{BUCKET}/checkpoints/platform/job-{uuid.uuid4().hex[:8]}/"
    first = _create(sagemaker, epochs=8, spot=True, checkpoint=checkpoint)

    interrupted = _wait(sagemaker, first)

    assert (interrupted["TrainingJobStatus"], interrupted["SecondaryStatus"]) == ("Failed", "Interrupted")
    assert interrupted["FailureReason"].startswith("Spot interruption:")
    assert _metrics(interrupted)["sluice:checkpoint_step"] == INTERRUPT_AT
    assert "ModelArtifacts" not in interrupted
    prefix = checkpoint.split(f"{BUCKET}/", 1)[1]
    assert f"{prefix}checkpoint-epoch-{INTERRUPT_AT:06d}.joblib" in _keys(s3, prefix)

    # The next attempt on the same checkpoint location is not reclaimed, and trains only what was left.
    second = _create(sagemaker, epochs=8, spot=True, checkpoint=checkpoint)
    resumed = _wait(sagemaker, second)

    assert resumed["TrainingJobStatus"] == "Completed", resumed.get("FailureReason")
    assert _metrics(resumed)["sluice:resumed_from_step"] == INTERRUPT_AT
    assert _metrics(resumed)["sluice:checkpoint_step"] == 8
    log = runner.log_path(second).read_text()
    assert log.count("train:loss=") == 8 - INTERRUPT_AT
    assert f"epoch {INTERRUPT_AT + 1}/8 " in log
    assert f"epoch {INTERRUPT_AT}/8 " not in log


def test_bad_data_is_an_algorithm_error_with_the_trainers_reason(s3, sagemaker):
    job = _wait(sagemaker, _create(sagemaker, data="uploads/platform/bad/"))

    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"].startswith("AlgorithmError: ")
    assert "iris.csv, line 2: expected 5 comma-separated values" in job["FailureReason"]
    assert "ModelArtifacts" not in job


def test_a_trainer_that_dies_without_a_reason_fails_and_leaves_no_process_behind(s3, sagemaker, runner):
    name = _create(sagemaker, image=LEAVES_A_CHILD)
    job = _wait(sagemaker, name)

    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Failed", "Failed")
    assert job["FailureReason"].startswith("AlgorithmError: the training process ended with exit code 3")
    child = int(re.search(r"child (\d+)", runner.log_path(name).read_text()).group(1))
    deadline = time.monotonic() + POLL_TIMEOUT
    while _alive(child):
        assert time.monotonic() < deadline, f"the trainer's child {child} outlived its job"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped by its new parent


def test_an_empty_channel_and_an_unknown_image_are_client_errors(s3, sagemaker):
    empty = _wait(sagemaker, _create(sagemaker, data="uploads/platform/nothing-here/"))
    unknown = _wait(sagemaker, _create(sagemaker, image="example/not-local:1"))

    assert empty["TrainingJobStatus"] == "Failed"
    assert empty["FailureReason"].startswith("ClientError: No S3 objects found under S3 URL")
    assert unknown["TrainingJobStatus"] == "Failed"
    assert unknown["FailureReason"].startswith('ClientError: Could not pull image "example/not-local:1"')
    assert _secondaries(unknown) == ["Starting", "Failed"]


# --- the trained model is usable: served on its artifact by transform jobs and endpoints --------------


@pytest.fixture(scope="module")
def lookup(sagemaker, moto, tmp_path_factory) -> Iterator[ModelLookup]:
    trained = TrainedModels(moto.url, "us-east-1", tmp_path_factory.mktemp("trained"))
    yield ModelLookup(sagemaker, {}, trained)
    trained.stop()


@pytest.fixture(scope="module")
def trained_model(sagemaker) -> str:
    """A model created from a training job's artifact, as the registry's inference container names it."""
    job = _wait(sagemaker, _create(sagemaker, epochs=40))
    assert job["TrainingJobStatus"] == "Completed", job.get("FailureReason")
    name = f"iris-trained-{uuid.uuid4().hex[:8]}"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "sluice/iris:local", "ModelDataUrl": job["ModelArtifacts"]["S3ModelArtifacts"]},
    )
    return name


def test_a_transform_job_on_the_trained_model_answers_its_predictions(s3, sagemaker, lookup, trained_model):
    transforms = install_transform_runner(lookup.model_url, sagemaker.meta.endpoint_url)
    try:
        s3.put_object(Bucket=BUCKET, Key="score/rows.csv", Body=b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")
        name = f"t-{uuid.uuid4().hex[:12]}"
        sagemaker.create_transform_job(
            TransformJobName=name,
            ModelName=trained_model,
            TransformInput={
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/score/"}},
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/scored/{name}/", "AssembleWith": "Line"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        )
        deadline = time.monotonic() + POLL_TIMEOUT
        while (job := sagemaker.describe_transform_job(TransformJobName=name))["TransformJobStatus"] == "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        transforms.uninstall()

    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    out = s3.get_object(Bucket=BUCKET, Key=f"scored/{name}/rows.csv.out")["Body"].read().decode()
    predictions = [json.loads(line) for line in out.splitlines()]
    assert [p["label"] for p in predictions] == ["setosa", "virginica"]


def test_an_endpoint_on_the_trained_model_is_served_by_the_local_runtime(sagemaker, moto, lookup, trained_model):
    sagemaker.create_endpoint_config(
        EndpointConfigName=f"{trained_model}-config",
        ProductionVariants=[
            {
                "VariantName": "trained",
                "ModelName": trained_model,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=trained_model, EndpointConfigName=f"{trained_model}-config")
    runtime = LocalSageMakerRuntime(lookup.variants)
    runtime.start()
    try:
        answer = _client("sagemaker-runtime", runtime.url).invoke_endpoint(
            EndpointName=trained_model,
            ContentType="application/json",
            Body=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5]]}),
        )
    finally:
        runtime.stop()

    body = json.loads(answer["Body"].read())
    assert answer["InvokedProductionVariant"] == "trained"
    assert [p["label"] for p in body["predictions"]] == ["setosa", "versicolor"]
    assert body["model_version"].startswith("tj-")  # the training job's artifact, not a sample model
    # One process per artifact, reused.
    assert lookup.model_url(trained_model) == lookup.trained.url(
        sagemaker.describe_model(ModelName=trained_model)["PrimaryContainer"]["ModelDataUrl"]
    )


def test_a_model_whose_artifact_is_missing_is_not_served(sagemaker, lookup):
    name = f"iris-missing-{uuid.uuid4().hex[:8]}"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": "sluice/iris:local", "ModelDataUrl": f"s3://{BUCKET}/nothing/model.tar.gz"},
    )

    assert lookup.model_url(name) is None


# --- local mode's settings for training ---------------------------------------------------------------


def test_the_spot_interruption_setting_is_an_epoch_number_or_unset(monkeypatch):
    from sluice_local.config import LocalConfig

    monkeypatch.delenv("SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH", raising=False)
    assert LocalConfig().spot_interrupt_at_epoch is None
    monkeypatch.setenv("SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH", "5")
    assert LocalConfig().spot_interrupt_at_epoch == 5
    for typo in ("five", "0", "-1"):
        monkeypatch.setenv("SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH", typo)
        with pytest.raises(ValueError, match="SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH"):
            LocalConfig()


def test_training_waits_are_local_only_where_the_template_declares_them(tmp_path):
    from sluice_local.config import LocalConfig
    from sluice_local.stack import deploy_parameters

    template = tmp_path / "template.yaml"
    template.write_text(
        "Parameters:\n  TrainingPollSeconds:\n    Type: Number\n  TrainingRetryWaitSeconds:\n    Type: Number\n"
    )

    assert deploy_parameters(LocalConfig(template=template, parameter_overrides={})) == {
        "TrainingPollSeconds": "2",
        "TrainingRetryWaitSeconds": "2",
    }
