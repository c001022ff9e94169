"""InvokeEndpointAsync in local mode, through a real boto3 sagemaker-runtime client: the local SageMaker runtime
reads inputs from and writes results to the embedded S3 (a moto server in this process), runs real iris model
processes, and publishes SageMaker's InferenceResult notifications to SNS topics (read through SQS queues)."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sluice_local.sagemaker_runtime import AsyncConfig, LocalSageMakerRuntime, Variant

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
BUCKET = "async-data"
ACCOUNT = "123456789012"
WAIT_SECONDS = 15.0
NOTIFICATION_KEYS = {
    "awsRegion",
    "eventTime",
    "receivedTime",
    "invocationStatus",
    "requestParameters",
    "responseParameters",
    "inferenceId",
    "eventVersion",
    "eventSource",
    "eventName",
}


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}, read_timeout=10),
    )


class Topics:
    """The success and error topics, each with an SQS queue subscribed, and the messages read so far."""

    def __init__(self, url: str) -> None:
        self.sns = _client("sns", url)
        self.sqs = _client("sqs", url)
        self.arns: dict[str, str] = {}
        self.queues: dict[str, str] = {}
        self.seen: dict[tuple[str, str], dict[str, Any]] = {}
        for kind in ("success", "error"):
            topic = self.sns.create_topic(Name=f"async-{kind}")["TopicArn"]
            queue = self.sqs.create_queue(QueueName=f"async-{kind}")["QueueUrl"]
            queue_arn = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            self.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
            self.arns[kind], self.queues[kind] = topic, queue

    def message(self, kind: str, inference_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while (kind, inference_id) not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {kind} notification for {inference_id} within {WAIT_SECONDS} s")
            answer = self.sqs.receive_message(QueueUrl=self.queues[kind], MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for received in answer.get("Messages", []):
                envelope = json.loads(received["Body"])
                assert envelope["TopicArn"] == self.arns[kind]
                note = json.loads(envelope["Message"])
                self.seen[(kind, note["inferenceId"])] = note
                self.sqs.delete_message(QueueUrl=self.queues[kind], ReceiptHandle=received["ReceiptHandle"])
        return self.seen[(kind, inference_id)]

    def none_for(self, kind: str, inference_id: str) -> bool:
        answer = self.sqs.receive_message(QueueUrl=self.queues[kind], MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for received in answer.get("Messages", []):
            note = json.loads(json.loads(received["Body"])["Message"])
            self.seen[(kind, note["inferenceId"])] = note
        return (kind, inference_id) not in self.seen


@pytest.fixture(scope="module")
def topics(moto) -> Topics:
    return Topics(moto.url)


@pytest.fixture(scope="module")
def s3(moto) -> Any:
    client = _client("s3", moto.url)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def runtime(moto, models, topics, s3) -> Iterator[LocalSageMakerRuntime]:
    variants = [Variant("v1", 0.8, models["v1"].url), Variant("v2", 0.2, models["v2"].url)]
    endpoints = {"iris": variants, "iris-async": variants, "iris-async-quiet": variants}
    configs = {
        "iris-async": AsyncConfig.from_api(
            {
                "OutputConfig": {
                    "S3OutputPath": f"s3://{BUCKET}/async-out",
                    "S3FailurePath": f"s3://{BUCKET}/async-failures/",
                    "NotificationConfig": {"SuccessTopic": topics.arns["success"], "ErrorTopic": topics.arns["error"]},
                }
            }
        ),
        "iris-async-quiet": AsyncConfig(output_path=f"s3://{BUCKET}/quiet"),
    }
    server = LocalSageMakerRuntime(endpoints.get, resolve_async=configs.get, aws_url=moto.url)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def runtime_client(runtime) -> Any:
    return _client("sagemaker-runtime", runtime.url)


def _put_input(s3: Any, body: bytes) -> str:
    key = f"inputs/{uuid.uuid4()}.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def _read(s3: Any, location: str) -> bytes:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _exists(s3: Any, location: str) -> bool:
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))


def test_async_inference_writes_the_prediction_and_notifies_success(runtime_client, s3, topics):
    location = _put_input(s3, json.dumps({"instances": [SETOSA, VIRGINICA]}).encode())

    response = runtime_client.invoke_endpoint_async(
        EndpointName="iris-async",
        InputLocation=location,
        ContentType="application/json",
        Accept="application/json",
        InferenceId="job-0001",
        RequestTTLSeconds=600,
    )
    note = topics.message("success", "job-0001")

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "job-0001"
    output, failure = response["OutputLocation"], response["FailureLocation"]
    assert output.startswith(f"s3://{BUCKET}/async-out/")
    assert output.endswith(".out")
    assert failure.startswith(f"s3://{BUCKET}/async-failures/")
    assert failure == output.replace("/async-out/", "/async-failures/").removesuffix(".out") + "-error.out"
    assert set(note) == NOTIFICATION_KEYS
    assert note["invocationStatus"] == "Completed"
    assert note["eventName"] == "InferenceResult"
    assert note["eventSource"] == "aws:sagemaker"
    assert note["eventVersion"] == "1.0"
    assert note["awsRegion"] == "us-east-1"
    assert note["eventTime"].endswith("Z")
    assert note["receivedTime"] <= note["eventTime"]
    assert note["requestParameters"] == {
        "accept": "application/json",
        "contentType": "application/json",
        "endpointName": "iris-async",
        "inputLocation": location,
    }
    assert note["responseParameters"] == {"contentType": "application/json", "outputLocation": output}
    answer = json.loads(_read(s3, output))
    assert answer["model_version"] in ("v1", "v2")
    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]
    assert all(math.isclose(sum(p["probabilities"].values()), 1.0, abs_tol=1e-9) for p in answer["predictions"])
    assert not _exists(s3, failure)


def test_model_error_goes_to_the_failure_location_and_the_error_topic(runtime_client, s3, topics):
    location = _put_input(s3, json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode())

    response = runtime_client.invoke_endpoint_async(
        EndpointName="iris-async", InputLocation=location, ContentType="application/json", InferenceId="job-0002"
    )
    note = topics.message("error", "job-0002")

    assert set(note) == NOTIFICATION_KEYS | {"failureReason"}
    assert note["invocationStatus"] == "Failed"
    assert note["failureReason"] == (
        "ClientError: Received client error (400) from model. "
        "See the SageMaker Endpoint logs in your account for more information."
    )
    assert note["requestParameters"] == {
        "contentType": "application/json",
        "endpointName": "iris-async",
        "inputLocation": location,
    }
    assert note["responseParameters"]["failureLocation"] == response["FailureLocation"]
    assert "expected 4 features" in json.loads(_read(s3, response["FailureLocation"]))["error"]
    assert not _exists(s3, response["OutputLocation"])
    assert topics.none_for("success", "job-0002")


def test_inline_body_named_output_and_generated_inference_id(runtime_client, s3, topics):
    response = runtime_client.invoke_endpoint_async(
        EndpointName="iris-async",
        Body=b"5.1,3.5,1.4,0.2\n",
        ContentType="text/csv",
        S3OutputPathExtension="team-a/",
        Filename="result.json",
        InvocationTimeoutSeconds=30,
        CustomAttributes="trace=abc",
    )
    inference_id = response["InferenceId"]
    note = topics.message("success", inference_id)

    assert uuid.UUID(inference_id)
    assert response["OutputLocation"] == f"s3://{BUCKET}/async-out/team-a/result.json"
    assert note["requestParameters"] == {
        "contentType": "text/csv",
        "customAttributes": "trace=abc",
        "endpointName": "iris-async",
    }
    assert json.loads(_read(s3, response["OutputLocation"]))["predictions"][0]["label"] == "setosa"


def test_missing_input_object_fails_without_a_failure_object(runtime_client, topics, s3):
    response = runtime_client.invoke_endpoint_async(
        EndpointName="iris-async", InputLocation=f"s3://{BUCKET}/inputs/missing.json", InferenceId="job-0003"
    )
    note = topics.message("error", "job-0003")

    assert note["invocationStatus"] == "Failed"
    assert note["failureReason"].startswith(
        f"ClientError: Failed to download the input from s3://{BUCKET}/inputs/missing.json"
    )
    assert "responseParameters" not in note
    assert not _exists(s3, response["FailureLocation"])


def test_without_topics_or_failure_path_the_output_still_lands(runtime_client, s3):
    response = runtime_client.invoke_endpoint_async(
        EndpointName="iris-async-quiet",
        Body=json.dumps({"instances": [VIRGINICA]}).encode(),
        ContentType="application/json",
    )

    assert "FailureLocation" not in response
    assert response["OutputLocation"].startswith(f"s3://{BUCKET}/quiet/")
    deadline = time.monotonic() + WAIT_SECONDS
    while not _exists(s3, response["OutputLocation"]):
        assert time.monotonic() < deadline, "no output"
        time.sleep(0.05)
    assert json.loads(_read(s3, response["OutputLocation"]))["predictions"][0]["label"] == "virginica"


def test_requests_async_cannot_serve_are_validation_errors(runtime_client):
    location = f"s3://{BUCKET}/inputs/any.json"
    cases = {
        "no-such-endpoint": {"EndpointName": "no-such-endpoint", "InputLocation": location},
        "not async": {"EndpointName": "iris", "InputLocation": location},
        "both inputs": {"EndpointName": "iris-async", "InputLocation": location, "Body": b"{}"},
        "no input": {"EndpointName": "iris-async"},
        "https input": {"EndpointName": "iris-async", "InputLocation": "https://example.com/x"},
        "inline too big": {"EndpointName": "iris-async", "Body": b" " * 128_001},
    }
    messages = {}
    for case, params in cases.items():
        with pytest.raises(runtime_client.exceptions.ValidationError) as caught:
            runtime_client.invoke_endpoint_async(**params)
        messages[case] = caught.value.response["Error"]["Message"]

    assert messages["no-such-endpoint"] == f"Endpoint no-such-endpoint of account {ACCOUNT} not found."
    assert "not configured for asynchronous inference" in messages["not async"]
    assert "exactly one of InputLocation and Body" in messages["both inputs"]
    assert "exactly one of InputLocation and Body" in messages["no input"]
    assert "s3://" in messages["https input"]
    assert "128000" in messages["inline too big"]


def test_invoke_endpoint_on_an_async_endpoint_is_refused_and_sync_endpoints_still_answer(runtime_client):
    body = json.dumps({"instances": [SETOSA]}).encode()

    with pytest.raises(runtime_client.exceptions.ValidationError) as caught:
        runtime_client.invoke_endpoint(EndpointName="iris-async", Body=body, ContentType="application/json")
    answer = runtime_client.invoke_endpoint(EndpointName="iris", Body=body, ContentType="application/json")

    assert "configured for asynchronous inference" in caught.value.response["Error"]["Message"]
    assert json.loads(answer["Body"].read())["predictions"][0]["label"] == "setosa"
