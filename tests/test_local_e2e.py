"""End to end over real HTTP against `make local`'s stack, started once per session on free ports."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from sluice_local.launch import LocalProcess

pytestmark = pytest.mark.e2e
KEY = "sk-sluice-e2e-local-key"
OPERATOR_KEY = "sk-sluice-e2e-local-operator-key"
SETOSA = [5.1, 3.5, 1.4, 0.2]
START_TIMEOUT = 120
INTERRUPT_AT_EPOCH = 5


class Local(LocalProcess):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(
            {
                "SLUICE_LOCAL_API_KEY": KEY,
                "SLUICE_LOCAL_OPERATOR_KEY": OPERATOR_KEY,
                "SLUICE_LOCAL_STATE_DIR": str(state_dir),
                # The first attempt of every spot training run is reclaimed after its 5th epoch.
                "SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH": str(INTERRUPT_AT_EPOCH),
            },
            START_TIMEOUT,
        )
        self.state_dir = state_dir

    def request(self, method: str, path: str, body=None, headers=None, key: str | None = KEY):
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")


@pytest.fixture(scope="session")
def local(tmp_path_factory):
    stack = Local(tmp_path_factory.mktemp("sluice-local"))
    stack.start()
    yield stack
    if stack.running():
        stack.stop()


def predict(local, rows, **headers):
    return local.request("POST", "/v1/models/iris/invoke", {"instances": rows}, headers=headers)


def test_health_answers_without_a_key(local):
    status, _, body = local.request("GET", "/v1/health", key=None)
    assert status == 200
    assert body["status"] == "ok"


def test_real_prediction_from_the_sample_model(local):
    status, _, body = predict(local, [SETOSA])
    assert status == 200, body
    prediction = body["output"]["predictions"][0]
    assert prediction["label"] == "setosa"
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert max(prediction["probabilities"], key=prediction["probabilities"].get) == "setosa"
    assert body["provider"] == "sagemaker"
    assert body["variant"] in {"v1", "v2"}
    assert body["output"]["model_version"] == body["variant"]
    assert body["estimated_cost_usd"] > 0


def test_variant_pinning_reaches_that_model_version(local):
    for _ in range(10):
        status, _, body = predict(local, [SETOSA], **{"X-Sluice-Target-Variant": "v2"})
        assert status == 200, body
        assert body["variant"] == "v2"
        assert body["output"]["model_version"] == "v2"


def test_variant_weights_are_respected_over_many_calls(local):
    seen = Counter(predict(local, [SETOSA])[2]["variant"] for _ in range(300))
    # 80/20 split: v1 share within a generous band (binomial sd is about 2.3 points at n=300).
    assert 0.70 <= seen["v1"] / 300 <= 0.90, seen


def test_csv_rows_are_accepted(local):
    status, _, body = local.request(
        "POST",
        "/v1/models/iris/invoke",
        b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 200, body
    assert [p["label"] for p in body["output"]["predictions"]] == ["setosa", "virginica"]


def test_models_list_describes_every_model_and_labels_emulated_ones(local):
    status, _, body = local.request("GET", "/v1/models")
    assert status == 200
    cards = {card["id"]: card for card in body["data"]}
    assert {"iris", "chat", "embed"} <= set(cards)
    assert all(card["description"] and card["example_request"] for card in cards.values())
    assert cards["chat"]["labels"]["emulated"] == "true"
    assert "iris-restricted" not in cards  # the local tenant may not use it


def test_openai_sdk_chat_and_embeddings_against_emulated_bedrock(local):
    import openai

    client = openai.OpenAI(base_url=f"{local.url}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hello there"}])
    assert "emulated" in reply.choices[0].message.content.lower()
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0

    vectors = client.embeddings.create(model="embed", input=["alpha", "beta", "alpha"])
    assert [len(item.embedding) for item in vectors.data] == [1024, 1024, 1024]
    assert vectors.data[0].embedding == vectors.data[2].embedding
    assert vectors.data[0].embedding != vectors.data[1].embedding

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


@pytest.mark.parametrize(
    ("name", "request_args", "status", "code"),
    [
        ("missing key", ("GET", "/v1/models", None, None, None), 401, "unauthenticated"),
        ("wrong key", ("GET", "/v1/models", None, None, "sk-sluice-wrong"), 401, "unauthenticated"),
        ("malformed JSON", ("POST", "/v1/chat/completions", b"{not json", None, KEY), 422, "validation_failed"),
        (
            "missing field",
            ("POST", "/v1/chat/completions", {"model": "chat"}, None, KEY),
            422,
            "validation_failed",
        ),
        ("unknown model", ("POST", "/v1/models/nope/invoke", {"instances": []}, None, KEY), 404, "model_not_found"),
        (
            "model not allowed",
            ("POST", "/v1/models/iris-restricted/invoke", {"instances": [SETOSA]}, None, KEY),
            403,
            "model_not_allowed",
        ),
        (
            "output token cap",
            (
                "POST",
                "/v1/chat/completions",
                {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100000},
                None,
                KEY,
            ),
            400,
            "token_limit_exceeded",
        ),
        (
            "unsupported content type",
            ("POST", "/v1/models/iris/invoke", b"<x/>", {"Content-Type": "application/xml"}, KEY),
            415,
            "unsupported_media_type",
        ),
        (
            "model 4xx is 400 model_rejected_input",
            ("POST", "/v1/models/iris/invoke", {"instances": [[1.0, 2.0]]}, None, KEY),
            400,
            "model_rejected_input",
        ),
        (
            "malformed JSON body is 422 not 502",
            ("POST", "/v1/models/iris/invoke", b"{not json", None, KEY),
            422,
            "validation_failed",
        ),
        (
            "CSV the model cannot parse is 400 model_rejected_input not 502",
            ("POST", "/v1/models/iris/invoke", b"true", {"Content-Type": "text/csv"}, KEY),
            400,
            "model_rejected_input",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_input_gets_a_clear_error_over_http(local, name, request_args, status, code):
    method, path, body, headers, key = request_args
    got, _, answer = local.request(method, path, body, headers=headers, key=key)
    assert got == status, answer
    assert answer["error"]["code"] == code
    assert answer["error"]["message"]


def test_payload_over_the_model_limit_is_a_413_pointing_to_async(local):
    rows = [SETOSA] * 300_000  # about 6.6 MB of JSON: above iris's 6 MB limit, below API Gateway's 10 MB
    status, _, answer = predict(local, rows)
    assert status == 413
    assert "async" in answer["error"]["message"]


def test_stop_then_start_again_on_the_same_ports(local):
    # Runs last in this module: Ctrl-C (SIGTERM here) stops every process; a second start works.
    assert local.stop() == 0
    local.start()
    status, _, _ = local.request("GET", "/v1/health", key=None)
    assert status == 200


# --- batch transform and async inference, on the stack's own resources -----------------------------------


def _aws(local, service: str, port: str = "aws"):
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        service,
        endpoint_url=f"http://127.0.0.1:{local.ports[port]}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def _outputs(local) -> dict[str, str]:
    stack = _aws(local, "cloudformation").describe_stacks(StackName="sluice-local")["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack["Outputs"]}


def test_transform_job_on_the_registered_iris_model_really_runs(local):
    bucket = _outputs(local)["DataBucketName"]
    s3, sagemaker = _aws(local, "s3"), _aws(local, "sagemaker")
    s3.put_object(Bucket=bucket, Key="e2e-transform/in/rows.csv", Body=b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")

    sagemaker.create_transform_job(
        TransformJobName="e2e-transform",
        ModelName="sluice-iris-v1",
        BatchStrategy="MultiRecord",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/e2e-transform/in/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={
            "S3OutputPath": f"s3://{bucket}/e2e-transform/out/",
            "Accept": "application/json",
            "AssembleWith": "Line",
        },
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    deadline = time.monotonic() + 20
    while (job := sagemaker.describe_transform_job(TransformJobName="e2e-transform"))["TransformJobStatus"] in (
        "InProgress",
        "Stopping",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)

    assert job["TransformJobStatus"] == "Completed", job.get("FailureReason")
    out = s3.get_object(Bucket=bucket, Key="e2e-transform/out/rows.csv.out")["Body"].read().decode()
    assert [json.loads(line)["label"] for line in out.splitlines()] == ["setosa", "virginica"]


def test_async_endpoint_writes_its_output_and_notifies_the_stacks_success_topic(local):
    outputs = _outputs(local)
    bucket = outputs["DataBucketName"]
    s3, sqs, sns = _aws(local, "s3"), _aws(local, "sqs"), _aws(local, "sns")
    queue = sqs.create_queue(QueueName="e2e-async-success")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=outputs["AsyncSuccessTopicArn"], Protocol="sqs", Endpoint=queue_arn)
    s3.put_object(Bucket=bucket, Key="e2e-async/input.json", Body=json.dumps({"instances": [SETOSA]}).encode())

    response = _aws(local, "sagemaker-runtime", "sagemaker").invoke_endpoint_async(
        EndpointName="sluice-iris-async",
        InputLocation=f"s3://{bucket}/e2e-async/input.json",
        ContentType="application/json",
        InferenceId="e2e-async-1",
    )
    note = None
    deadline = time.monotonic() + 20
    while note is None:
        assert time.monotonic() < deadline, "no success notification"
        for message in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []):
            candidate = json.loads(json.loads(message["Body"])["Message"])
            if candidate["inferenceId"] == "e2e-async-1":
                note = candidate

    assert response["OutputLocation"].startswith(f"s3://{bucket}/async-endpoint-output/")
    assert note["invocationStatus"] == "Completed"
    assert note["responseParameters"]["outputLocation"] == response["OutputLocation"]
    key = response["OutputLocation"].removeprefix(f"s3://{bucket}/")
    answer = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert answer["predictions"][0]["label"] == "setosa"


def _wait_for(check, timeout: float = 90, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def test_async_job_through_the_api_runs_on_the_real_model_and_its_output_downloads(local):
    outputs = _outputs(local)
    sqs, sns = _aws(local, "sqs"), _aws(local, "sns")
    events = sqs.create_queue(QueueName="e2e-job-events")["QueueUrl"]
    events_arn = sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=outputs["JobEventsTopicArn"], Protocol="sqs", Endpoint=events_arn)
    hook = "https://hooks.example.com/sluice"
    status, headers, job = local.request(
        "POST",
        "/v1/models/iris/async",
        {"instances": [SETOSA, [6.7, 3.0, 5.2, 2.3]]},
        headers={"X-Sluice-Callback-Url": hook},
    )
    assert status == 202, job
    location = {k.lower(): v for k, v in headers.items()}["location"]
    assert location == f"/v1/jobs/{job['id']}"

    def finished():
        _, _, current = local.request("GET", location)
        return current if current["status"] in ("SUCCEEDED", "FAILED") else None

    done = _wait_for(finished)
    assert done["status"] == "SUCCEEDED", done
    with urllib.request.urlopen(done["output_url"], timeout=30) as response:
        output = json.loads(response.read())
    labels = [p["label"] for p in output["output"]["predictions"]] if "output" in output else None
    labels = labels or [p["label"] for p in output["predictions"]]
    assert labels == ["setosa", "virginica"]

    # Announced by the job announcer from the jobs table's stream: the completion on the job events
    # topic, and the callback handled (the local caller has no webhook secret, so it is refused and noted).
    def announced():
        for message in sqs.receive_message(QueueUrl=events, WaitTimeSeconds=1).get("Messages", []):
            event = json.loads(json.loads(message["Body"])["Message"])
            if event["job"]["id"] == job["id"]:
                return event
        return None

    event = _wait_for(announced, timeout=30)
    assert event["type"] == "sluice.job.finished"
    assert event["job"]["status"] == "SUCCEEDED"

    def noted():
        _, _, current = local.request("GET", location)
        return current if "notification" in current["details"] else None

    note = _wait_for(noted, timeout=30)["details"]["notification"]
    assert (note["channel"], note["target"], note["delivered"]) == ("webhook", hook, False)


def test_a_csv_dropped_into_the_bucket_gets_one_prediction_per_line(local):
    bucket = _outputs(local)["DataBucketName"]
    s3 = _aws(local, "s3")
    rows = ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "5.9,3.0,4.2,1.5"]
    s3.put_object(Bucket=bucket, Key="batch-input/iris/e2e-drop.csv", Body=("\n".join(rows) + "\n").encode())

    def output_object():
        listed = s3.list_objects_v2(Bucket=bucket, Prefix="batch-output/").get("Contents", [])
        return next((o["Key"] for o in listed if o["Key"].endswith("e2e-drop.csv.out")), None)

    key = _wait_for(output_object, timeout=120)
    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    assert len(lines) == len(rows)
    predictions = [json.loads(line) for line in lines]
    assert [p["label"] for p in predictions] == ["setosa", "virginica", "versicolor"]
    for prediction in predictions:
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_a_large_batch_job_waits_for_the_operator_key_then_really_runs(local):
    from sluice.storage.keys import upload_key

    bucket = _outputs(local)["DataBucketName"]
    # Under the consumer's own uploads prefix (tenant local), wherever the key scheme puts it.
    prefix = upload_key("local", "e2e-approval") + "/"
    _aws(local, "s3").put_object(Bucket=bucket, Key=f"{prefix}rows.csv", Body=b"5.1,3.5,1.4,0.2\n")
    request = {"model": "iris", "input_prefix": f"s3://{bucket}/{prefix}"}

    status, _, job = local.request("POST", "/v1/batch-jobs", {**request, "instance_type": "ml.p3.2xlarge"})
    assert status == 202, job
    assert job["status"] == "AWAITING_APPROVAL"

    def pending():
        _, _, listed = local.request("GET", "/v1/approvals", key=OPERATOR_KEY)
        return next((item for item in listed["data"] if item["job_id"] == job["id"]), None)

    approval = _wait_for(pending, timeout=30)
    assert (approval["instance_type"], approval["requested_by"]) == ("ml.p3.2xlarge", "local")
    # The consumer key that submitted the job cannot approve it.
    status, _, refused = local.request("POST", f"/v1/approvals/{approval['id']}/approve", {"reason": "mine"}, key=KEY)
    assert (status, refused["error"]["code"]) == (403, "operator_required")
    status, _, decided = local.request(
        "POST", f"/v1/approvals/{approval['id']}/approve", {"reason": "e2e"}, key=OPERATOR_KEY
    )
    assert status == 200, decided

    def finished():
        _, _, current = local.request("GET", f"/v1/jobs/{job['id']}")
        return current if current["status"] in ("SUCCEEDED", "FAILED") else None

    done = _wait_for(finished, timeout=60)
    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["approval"]["by"] == "platform"
    assert [f["key"].rsplit("/", 1)[-1] for f in done["output_files"]] == ["rows.csv.out"]


def _iris_training_csv() -> bytes:
    """SageMaker's CSV layout for built-in algorithms: the label first, then the four measurements."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    lines = [
        ",".join([str(iris.target_names[label]), *(f"{value:g}" for value in row)])
        for row, label in zip(iris.data, iris.target, strict=True)
    ]
    return ("\n".join(lines) + "\n").encode()


def _train(local, name: str, threshold: float) -> dict:
    from sluice.storage.keys import upload_key

    bucket = _outputs(local)["DataBucketName"]
    prefix = upload_key("platform", f"e2e-{name}") + "/"
    _aws(local, "s3").put_object(Bucket=bucket, Key=f"{prefix}iris.csv", Body=_iris_training_csv())
    body = {
        "trainer": "iris",
        "input_prefix": f"s3://{bucket}/{prefix}",
        "hyperparameters": {"epochs": "40"},
        "instance_type": "ml.m5.large",
        "spot": True,
        "max_runtime_seconds": 600,
        "max_wait_seconds": 1200,
        "max_attempts": 3,
        "register": {"group": "iris", "metric": "validation:accuracy", "threshold": threshold},
    }
    status, _, job = local.request("POST", "/v1/training-jobs", body, key=OPERATOR_KEY)
    assert status == 202, job
    assert job["kind"] == "training"

    def finished():
        _, _, current = local.request("GET", f"/v1/jobs/{job['id']}", key=OPERATOR_KEY)
        return current if current["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return _wait_for(finished, timeout=240)


def test_a_spot_interrupted_training_run_resumes_from_its_checkpoint_and_registers_an_approved_version(local):
    done = _train(local, "train-approved", threshold=0.9)

    assert done["status"] == "SUCCEEDED", done
    first, second = done["details"]["attempts"]
    assert first["secondary_status"] == "Interrupted"
    assert first["last_checkpoint_step"] >= INTERRUPT_AT_EPOCH
    assert second["status"] == "Completed"
    assert second["resumed_from_step"] >= INTERRUPT_AT_EPOCH
    assert not second["restarted_from_zero"]
    # Nothing was trained twice from zero: the epochs of both attempts add up to less than 40 + 5.
    trained = sum(attempt["last_checkpoint_step"] - attempt["resumed_from_step"] for attempt in (first, second))
    assert trained < 40 + INTERRUPT_AT_EPOCH
    assert second["last_checkpoint_step"] == 40
    package = done["details"]["model_package"]
    assert (package["group"], package["approval_status"]) == ("iris", "Approved")
    assert done["details"]["metrics"]["validation:accuracy"] >= 0.9

    status, _, registry = local.request("GET", "/v1/registry/iris", key=OPERATOR_KEY)
    assert status == 200, registry
    listed = {version["version"]: version for version in registry["versions"]}
    assert listed[package["version"]]["approval_status"] == "Approved"
    assert listed[package["version"]]["model_package_arn"] == package["arn"]


def test_a_run_below_its_threshold_registers_a_rejected_version(local):
    done = _train(local, "train-rejected", threshold=0.999)

    assert done["status"] == "SUCCEEDED", done
    assert len(done["details"]["attempts"]) == 2
    package = done["details"]["model_package"]
    assert package["approval_status"] == "Rejected"
    assert "below threshold 0.999" in package["reason"]


def test_the_registered_version_serves_predictions_on_the_local_runtime(local):
    """The trained artifact deployed as SageMaker would: a Model from the registered version, an endpoint."""
    status, _, registry = local.request("GET", "/v1/registry/iris", key=OPERATOR_KEY)
    assert status == 200, registry
    approved = next((version for version in registry["versions"] if version["approval_status"] == "Approved"), None)
    if approved is None:  # run on its own: train a version first
        package = _train(local, "train-serve", threshold=0.9)["details"]["model_package"]
        approved = {"model_package_arn": package["arn"]}
    sagemaker = _aws(local, "sagemaker")
    container = sagemaker.describe_model_package(ModelPackageName=approved["model_package_arn"])[
        "InferenceSpecification"
    ]["Containers"][0]
    sagemaker.create_model(
        ModelName="e2e-trained-iris",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sluice-local-sagemaker",
        PrimaryContainer={"Image": container["Image"], "ModelDataUrl": container["ModelDataUrl"]},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName="e2e-trained-iris",
        ProductionVariants=[
            {
                "VariantName": "trained",
                "ModelName": "e2e-trained-iris",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName="e2e-trained-iris", EndpointConfigName="e2e-trained-iris")

    runtime = _aws(local, "sagemaker-runtime", port="sagemaker")
    answer = runtime.invoke_endpoint(
        EndpointName="e2e-trained-iris",
        ContentType="application/json",
        Body=json.dumps({"instances": [SETOSA, [6.7, 3.0, 5.2, 2.3]]}),
    )
    predictions = json.loads(answer["Body"].read())["predictions"]
    assert [prediction["label"] for prediction in predictions] == ["setosa", "virginica"]


# ---------------------------------------------------------------------- deployments, under real traffic
class Traffic:
    """A client calling /v1/models/iris/invoke about 20 times a second, as production clients would."""

    def __init__(self, local) -> None:
        import threading

        self.local = local
        self.answers: list[tuple[float, int, str | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _, body = predict(self.local, [SETOSA])
            variant = body.get("variant") if status == 200 else None
            version = body["output"].get("model_version") if status == 200 else None
            self.answers.append((time.monotonic(), status, variant, version))
            self._stop.wait(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def since(self, moment: float) -> list[tuple[float, int, str | None, str | None]]:
        return [answer for answer in self.answers if answer[0] >= moment]


def _deploy(local, body: dict) -> tuple[dict, float]:
    status, _, job = local.request("POST", "/v1/deployments", body, key=OPERATOR_KEY)
    assert status == 202, job
    assert job["kind"] == "deployment"

    def finished():
        _, _, current = local.request("GET", f"/v1/jobs/{job['id']}", key=OPERATOR_KEY)
        return current if current["status"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return _wait_for(finished, timeout=240), time.monotonic()


DEPLOYMENT_GUARDS = {"min_invocations": 10, "consecutive_breaches": 2}


def test_a_degraded_version_is_rolled_back_by_its_guards_and_then_serves_nothing(local):
    bake = 8
    with Traffic(local) as traffic:
        time.sleep(2)
        started = time.monotonic()
        done, ended = _deploy(
            local,
            {
                "model": "iris",
                "model_name": "sluice-iris-degraded",
                "variant_name": "degraded",
                "strategy": "canary",
                "steps": [25, 50, 100],
                "bake_seconds": bake,
                "guards": DEPLOYMENT_GUARDS,
            },
        )
        time.sleep(3)

    assert done["status"] == "FAILED", done
    assert done["details"]["outcome"] == "rolled_back"
    reason = done["details"]["rollback_reason"]
    assert "error_rate_percent" in reason or "low_confidence_percent" in reason, reason
    first = done["details"]["steps"][0]
    assert first["verdict"] == "breached"
    assert len(done["details"]["steps"]) == 1
    # Within two bake windows of the first step (plus the endpoint updates' second or two each).
    assert ended - started < 2 * bake + 20
    after = traffic.since(ended + 1)
    assert after
    assert all(variant != "degraded" for _, _, variant, _ in after)
    assert all(status == 200 for _, status, _, _ in after)


def test_a_good_version_is_promoted_serves_everything_and_gets_autoscaling(local):
    with Traffic(local) as traffic:
        time.sleep(2)
        done, ended = _deploy(
            local,
            {
                "model": "iris",
                "model_name": "sluice-iris-v2",
                "variant_name": "v2-promoted",
                "strategy": "canary",
                "steps": [25, 100],
                "bake_seconds": 6,
                "guards": DEPLOYMENT_GUARDS,
                "autoscaling": {"min": 1, "max": 4, "scale_in_cooldown": 300, "scale_out_cooldown": 60},
            },
        )
        time.sleep(3)

    assert done["status"] == "SUCCEEDED", done
    assert done["details"]["outcome"] == "promoted"
    assert [step["verdict"] for step in done["details"]["steps"]] == ["passed", "passed"]
    after = traffic.since(ended + 1)
    assert after
    assert {(variant, version) for _, _, variant, version in after} == {("v2-promoted", "v2")}

    autoscaling = _aws(local, "application-autoscaling")
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="endpoint/sluice-iris/variant/v2-promoted"
    )["ScalingPolicies"]
    assert len(policies) == 1
    tracking = policies[0]["TargetTrackingScalingPolicyConfiguration"]
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (300, 60)
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
