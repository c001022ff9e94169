"""SageMaker batch transform in local mode: jobs created in the embedded moto (a moto server in this
process) run against real iris model processes, through real boto3 clients."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sluice_local.transform import TransformRunner, _JobSpec, install_transform_runner

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
VERSICOLOR = [5.9, 3.0, 4.2, 1.5]
ROWS = [SETOSA, VIRGINICA, VERSICOLOR, SETOSA, VIRGINICA]
LABELS = ["setosa", "virginica", "versicolor", "setosa", "virginica"]
BUCKET = "transform-data"
ROLE = "arn:aws:iam::123456789012:role/sluice-local-sagemaker"
POLL_TIMEOUT = 20.0


class Gate:
    """A model name whose resolution waits until the test opens the gate: the job stays InProgress."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.open = threading.Event()


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def runner(moto, models, gate) -> Iterator[TransformRunner]:
    def resolve(model_name: str) -> str | None:
        if model_name == "iris-gated":
            gate.reached.set()
            gate.open.wait(POLL_TIMEOUT)
            return models["v1"].url
        return {"iris-v1": models["v1"].url, "iris-v2": models["v2"].url}.get(model_name)

    installed = install_transform_runner(resolve, moto.url)
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
    return client


@pytest.fixture(scope="module")
def sagemaker(moto, runner) -> Any:
    client = _client("sagemaker", moto.url)
    for name in ("iris-v1", "iris-v2", "iris-gated", "iris-unserved"):
        client.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={"Image": "sluice/iris:local"})
    return client


def _csv(rows: list[list[Any]]) -> bytes:
    return "".join(",".join(str(v) for v in row) + "\n" for row in rows).encode()


def _start(
    sagemaker: Any,
    prefix: str,
    *,
    model: str = "iris-v1",
    content_type: str = "text/csv",
    strategy: str = "MultiRecord",
    data_processing: dict[str, str] | None = None,
    data_type: str = "S3Prefix",
    **extra: Any,
) -> tuple[str, str]:
    name = f"t-{uuid.uuid4().hex[:12]}"
    output = f"s3://{BUCKET}/out/{name}/"
    params: dict[str, Any] = {
        "TransformJobName": name,
        "ModelName": model,
        "BatchStrategy": strategy,
        "MaxPayloadInMB": 6,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": data_type, "S3Uri": f"s3://{BUCKET}/{prefix}"}},
            "ContentType": content_type,
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": output, "Accept": "application/json", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **extra,
    }
    if data_processing:
        params["DataProcessing"] = data_processing
    sagemaker.create_transform_job(**params)
    return name, f"out/{name}/"


def _wait(sagemaker: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + POLL_TIMEOUT
    while time.monotonic() < deadline:
        job = sagemaker.describe_transform_job(TransformJobName=name)
        if job["TransformJobStatus"] in ("Completed", "Failed", "Stopped"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"transform job {name} still {job['TransformJobStatus']} after {POLL_TIMEOUT} s")


def _lines(s3: Any, key: str) -> list[Any]:
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def _outputs(s3: Any, prefix: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))


def _is_prediction(value: Any) -> bool:
    probabilities = value["probabilities"]
    return set(probabilities) == {"setosa", "versicolor", "virginica"} and math.isclose(
        sum(probabilities.values()), 1.0, abs_tol=1e-9
    )


def test_csv_rows_become_one_prediction_line_each(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="csv/rows.csv", Body=_csv(ROWS))

    name, out = _start(sagemaker, "csv/")
    job = _wait(sagemaker, name)

    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert job["TransformEndTime"] >= job["TransformStartTime"]
    assert "FailureReason" not in job
    predictions = _lines(s3, f"{out}rows.csv.out")
    assert len(predictions) == len(ROWS)
    assert all(_is_prediction(p) for p in predictions)
    assert [p["label"] for p in predictions] == LABELS


def test_a_manifest_scores_the_objects_it_lists_and_not_their_look_alikes(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="pinned/job-1/input/day/rows.csv", Body=_csv(ROWS))
    s3.put_object(Bucket=BUCKET, Key="pinned/job-1/input/day/rows.csv.bak", Body=b"not,a,row\n")
    manifest = [{"prefix": f"s3://{BUCKET}/pinned/job-1/input/"}, "day/rows.csv"]
    s3.put_object(Bucket=BUCKET, Key="pinned/job-1/manifest.json", Body=json.dumps(manifest).encode())

    name, out = _start(sagemaker, "pinned/job-1/manifest.json", data_type="ManifestFile")
    job = _wait(sagemaker, name)

    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    assert _outputs(s3, out) == [f"{out}day/rows.csv.out"]
    assert [p["label"] for p in _lines(s3, f"{out}day/rows.csv.out")] == LABELS


def test_a_manifest_that_is_not_one_fails_the_job_saying_so(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="pinned/bad-manifest.json", Body=b'{"prefix": "s3://x/"}')

    name, out = _start(sagemaker, "pinned/bad-manifest.json", data_type="ManifestFile")
    job = _wait(sagemaker, name)

    assert job["TransformJobStatus"] == "Failed"
    assert "is not [" in job["FailureReason"]
    assert _outputs(s3, out) == []


def test_json_lines_records_single_record_joined_with_the_input(s3, sagemaker):
    records = [{"id": f"r{i}", "instances": [row]} for i, row in enumerate(ROWS)]
    s3.put_object(Bucket=BUCKET, Key="jsonl/a.jsonl", Body="\n".join(json.dumps(r) for r in records).encode())

    name, out = _start(
        sagemaker,
        "jsonl/a.jsonl",
        # The iris model takes application/json only: each line is one JSON request.
        content_type="application/json",
        strategy="SingleRecord",
        data_processing={"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"},
    )
    job = _wait(sagemaker, name)

    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    joined = _lines(s3, f"{out}a.jsonl.out")
    assert [line["id"] for line in joined] == [r["id"] for r in records]
    assert [line["instances"] for line in joined] == [r["instances"] for r in records]
    assert [line["SageMakerOutput"]["label"] for line in joined] == LABELS
    assert all(_is_prediction(line["SageMakerOutput"]) for line in joined)


def test_json_output_filter_keeps_the_named_attributes(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="jsonl-filter/a.jsonl", Body=b'{"id": "x", "instances": [[6.7, 3.0, 5.2, 2.3]]}\n')

    name, out = _start(
        sagemaker,
        "jsonl-filter/",
        content_type="application/json",
        strategy="SingleRecord",
        data_processing={"JoinSource": "Input", "OutputFilter": "$['id','SageMakerOutput']"},
    )
    assert _wait(sagemaker, name)["TransformJobStatus"] == "Completed"

    [line] = _lines(s3, f"{out}a.jsonl.out")
    assert set(line) == {"id", "SageMakerOutput"}
    assert line["SageMakerOutput"]["label"] == "virginica"


def test_csv_join_appends_the_prediction_to_the_row_and_filters_drop_the_id(s3, sagemaker):
    rows = [[f"id-{i}", *row] for i, row in enumerate(ROWS)]
    s3.put_object(Bucket=BUCKET, Key="csv-join/ids.csv", Body=_csv(rows))

    name, out = _start(sagemaker, "csv-join/", data_processing={"InputFilter": "$[1:]", "JoinSource": "Input"})
    filtered, filtered_out = _start(
        sagemaker,
        "csv-join/",
        data_processing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )

    assert _wait(sagemaker, name)["TransformJobStatus"] == "Completed"
    assert _wait(sagemaker, filtered)["TransformJobStatus"] == "Completed"
    joined = _lines(s3, f"{out}ids.csv.out")
    assert [line[:5] for line in joined] == rows
    assert [line[5]["label"] for line in joined] == LABELS
    assert all(len(line) == 6 and _is_prediction(line[5]) for line in joined)
    assert [[line[0], line[1]["label"]] for line in _lines(s3, f"{filtered_out}ids.csv.out")] == [
        [row[0], label] for row, label in zip(rows, LABELS, strict=True)
    ]


def test_model_error_fails_the_job_with_the_models_message_and_writes_no_output(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="bad/rows.csv", Body=_csv([SETOSA, [1.0, 2.0, 3.0]]))

    name, out = _start(sagemaker, "bad/", model="iris-v2")
    job = _wait(sagemaker, name)

    assert job["TransformJobStatus"] == "Failed"
    reason = job["FailureReason"]
    assert reason.startswith("ClientError: Bad HTTP status received from algorithm: 400")
    assert "expected 4 features" in reason
    assert f"s3://{BUCKET}/bad/rows.csv" in reason
    assert _outputs(s3, out) == []


def test_every_object_gets_its_own_output_and_a_bad_one_fails_the_job_only(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="multi/a.csv", Body=_csv(ROWS[:2]))
    s3.put_object(Bucket=BUCKET, Key="multi/nested/b.csv", Body=_csv(ROWS[2:]))
    name, out = _start(sagemaker, "multi/")
    assert _wait(sagemaker, name)["TransformJobStatus"] == "Completed"
    assert _outputs(s3, out) == [f"{out}a.csv.out", f"{out}nested/b.csv.out"]
    assert len(_lines(s3, f"{out}a.csv.out")) == 2
    assert [p["label"] for p in _lines(s3, f"{out}nested/b.csv.out")] == LABELS[2:]

    s3.put_object(Bucket=BUCKET, Key="multi/z-bad.csv", Body=b"not,numbers,at,all\n")
    name, out = _start(sagemaker, "multi/")
    job = _wait(sagemaker, name)
    assert job["TransformJobStatus"] == "Failed"
    assert "z-bad.csv" in job["FailureReason"]
    assert _outputs(s3, out) == [f"{out}a.csv.out", f"{out}nested/b.csv.out"]


def test_a_model_no_process_serves_fails_and_an_unknown_model_is_refused(s3, sagemaker):
    s3.put_object(Bucket=BUCKET, Key="unserved/rows.csv", Body=_csv(ROWS))

    name, _ = _start(sagemaker, "unserved/", model="iris-unserved")
    job = _wait(sagemaker, name)
    with pytest.raises(ClientError) as refused:
        _start(sagemaker, "unserved/", model="no-such-model")

    assert job["TransformJobStatus"] == "Failed"
    assert job["FailureReason"].startswith('ClientError: Could not find model "arn:aws:sagemaker:us-east-1:')
    assert "iris-unserved" in job["FailureReason"]
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find model" in refused.value.response["Error"]["Message"]


def test_an_empty_prefix_fails_the_job(sagemaker):
    name, _ = _start(sagemaker, "nothing-here/")

    job = _wait(sagemaker, name)

    assert job["TransformJobStatus"] == "Failed"
    assert "No S3 objects found under S3 URL" in job["FailureReason"]


def test_in_progress_until_done_stop_gives_stopped_and_no_output(s3, sagemaker, gate):
    s3.put_object(Bucket=BUCKET, Key="gated/rows.csv", Body=_csv(ROWS))
    name, out = _start(sagemaker, "gated/", model="iris-gated")
    try:
        assert gate.reached.wait(POLL_TIMEOUT)
        running = sagemaker.describe_transform_job(TransformJobName=name)
        with pytest.raises(ClientError) as duplicate:
            sagemaker.create_transform_job(
                TransformJobName=name,
                ModelName="iris-v1",
                TransformInput=running["TransformInput"],
                TransformOutput=running["TransformOutput"],
                TransformResources=running["TransformResources"],
            )
        sagemaker.stop_transform_job(TransformJobName=name)
        stopping = sagemaker.describe_transform_job(TransformJobName=name)["TransformJobStatus"]
    finally:
        gate.open.set()
    job = _wait(sagemaker, name)

    assert running["TransformJobStatus"] == "InProgress"
    assert "TransformEndTime" not in running
    assert duplicate.value.response["Error"]["Code"] == "ResourceInUse"
    assert stopping == "Stopping"
    assert job["TransformJobStatus"] == "Stopped"
    assert _outputs(s3, out) == []
    with pytest.raises(ClientError) as finished:
        sagemaker.stop_transform_job(TransformJobName=name)
    assert finished.value.response["Error"]["Code"] == "ValidationException"


def test_without_prediction_splitting_output_is_what_sagemaker_writes(s3, sagemaker, runner, monkeypatch):
    """AWS writes each mini-batch's response as it came: one line per request."""
    monkeypatch.setattr(runner, "split_predictions", False)
    s3.put_object(Bucket=BUCKET, Key="aws/rows.csv", Body=_csv(ROWS))

    multi, multi_out = _start(sagemaker, "aws/", strategy="MultiRecord")
    single, single_out = _start(sagemaker, "aws/", strategy="SingleRecord")
    joined, _ = _start(sagemaker, "aws/", strategy="MultiRecord", data_processing={"JoinSource": "Input"})

    assert _wait(sagemaker, multi)["TransformJobStatus"] == "Completed"
    assert _wait(sagemaker, single)["TransformJobStatus"] == "Completed"
    [response] = _lines(s3, f"{multi_out}rows.csv.out")
    assert [p["label"] for p in response["predictions"]] == LABELS
    responses = _lines(s3, f"{single_out}rows.csv.out")
    assert [r["predictions"][0]["label"] for r in responses] == LABELS
    failed = _wait(sagemaker, joined)
    assert failed["TransformJobStatus"] == "Failed"
    assert "one output per input record" in failed["FailureReason"]


def test_mini_batches_stay_under_the_payload_limit():
    job = SimpleNamespace(
        transform_input={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        transform_output={"S3OutputPath": "s3://b/out"},
        data_processing=None,
        max_payload_in_mb=1,
        model_client_config=None,
        batch_strategy="MultiRecord",
    )
    spec = _JobSpec.from_job(job, split_predictions=True)
    spec.max_payload_bytes = 10
    records = [b"aaaa", b"bbbb", b"cc", b"ddddddddd", b"e"]

    assert list(spec._mini_batches(records, "s3://b/in/x")) == [(0, 2), (2, 3), (3, 4), (4, 5)]
    assert spec.output_key("in/x.csv") == "out/x.csv.out"
    assert spec.output_key("in/deeper/y.csv") == "out/deeper/y.csv.out"
