"""Completion announcements and SageMaker's own async notifications.

- async_notifications: SageMaker's InferenceResult messages (events/async_notifications/, SQS records
  of the notifications queue) move the job whose id is the inferenceId, once; duplicates, late errors,
  unknown ids and malformed messages change nothing and never fail a record. One scenario goes through
  the template's topic -> queue subscription and the queue's event source mapping.
- the job announcer (fed by the jobs table's stream, delivered as Lambda does: sluice_local.streams),
  after the async state machine: the caller's SNS topic, an HMAC-signed webhook on a loopback HTTPS
  server (its certificate trusted through SSL_CERT_FILE), and a failing webhook that is retried by the
  event source mapping, then parked in the announcer DLQ with the job's outbox marker still set.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.models import Callback, Job, JobKind, JobStatus
from sluice.jobs.notify import DELIVERY_HEADER
from sluice.jobs.webhook_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook, verify_webhook
from sluice.settings import get_settings
from sluice.storage.keys import async_input_key, async_output_key, s3_uri
from sluice_local import streams
from tests.conftest import load_event
from tests.workflow_support import (
    ACCOUNT,
    CALLER,
    REGION,
    WEBHOOK_SECRET,
    drain,
    jobs_stack,
    new_job_id,
    run_execution,
    states_entered,
    subscribe_queue,
)

CATALOG = {
    "version": 1,
    "models": {
        "scorer": {
            "description": "A scorer on a real-time SageMaker endpoint (scripted in the tests)",
            "task": "predict",
            "backend": {"provider": "sagemaker", "endpoint_name": "sluice-scorer"},
            "allowed_callers": [CALLER],
        }
    },
}


SAMPLE_ENDPOINT = "sluice-llm-async"
SAMPLE_INPUT = "s3://sluice-data-123456789012-us-east-1/async/team-risk/{job_id}/input"


# ---------------------------------------------------------------------- a webhook receiver on loopback HTTPS
def self_signed_certificate(folder) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "webhook.pem", folder / "webhook.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


class WebhookReceiver:
    """Records each request; answers with the status set for its path."""

    def __init__(self, cert: str, key: str) -> None:
        self.requests: list[dict] = []
        self.status_for: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status_for.get(self.path, 200))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def to(self, path: str) -> list[dict]:
        return [request for request in self.requests if request["path"] == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def stack(certificate):
    # The notifier trusts the receiver's certificate as it would a public CA's.
    with jobs_stack("sluice-notify-flow", CATALOG, extra_env={"SSL_CERT_FILE": certificate[0]}) as deployed:
        yield deployed


@pytest.fixture(scope="module")
def receiver(certificate):
    server = WebhookReceiver(*certificate)
    yield server
    server.stop()


def create_job(stack, *, status: JobStatus = JobStatus.RUNNING, callback: Callback | None = None) -> str:
    job_id = new_job_id()
    stack.store().create(
        Job(
            job_id=job_id,
            caller=CALLER,
            kind=JobKind.ASYNC,
            model="llm-async",
            status=status,
            # Where the sample notifications say SageMaker read the input, on the endpoint they name.
            input_location=SAMPLE_INPUT.format(job_id=job_id),
            execution_id=job_id,
            callback=callback,
            details={"runner": "sagemaker-async", "endpoint_name": SAMPLE_ENDPOINT},
        )
    )
    return job_id


# ---------------------------------------------------------------------- SageMaker async notifications
def notification(name: str, job_id: str, *, message: dict | None = None) -> dict:
    """events/async_notifications/<name>.json for this job (its inferenceId and locations)."""
    event = copy.deepcopy(load_event(f"async_notifications/{name}.json"))
    record = event["Records"][0]
    body = json.loads(record["body"]) if message is None else message
    record["body"] = json.dumps(body).replace("01JD7QF0R2T4V6X8Z0B2D4F6H8", job_id)
    record["messageId"] = f"{record['messageId'][:-12]}{uuid.uuid4().hex[:12]}"
    return event


def notify(stack, event: dict) -> list[str]:
    """The message ids the function reported as failed (a partial batch response)."""
    answer = stack.runner.invoke("AsyncNotificationsFunction", event)
    return [failure["itemIdentifier"] for failure in answer["batchItemFailures"]]


def test_success_notification_marks_the_job_succeeded_with_sagemakers_output_and_announces_it(stack):
    job_id = create_job(stack)
    assert notify(stack, notification("success", job_id)) == []

    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.output_location == f"s3://sluice-data-123456789012-us-east-1/async/team-risk/{job_id}/output"
    assert job.details["endpoint_name"] == "sluice-llm-async"
    assert job.details["content_type"] == "application/json"
    [event] = stack.job_events(job_id, wait=2)
    assert event["job"]["status"] == "SUCCEEDED"


def test_error_notification_marks_the_job_failed_with_sagemakers_reason(stack):
    job_id = create_job(stack, status=JobStatus.QUEUED)
    assert notify(stack, notification("error", job_id)) == []

    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith("ClientError: Received server error (500) from model.")
    assert job.details["failure_location"].endswith(f"/{job_id}/failure")
    [event] = stack.job_events(job_id, wait=2)
    assert event["job"]["status"] == "FAILED"


def test_duplicate_notification_changes_nothing_and_is_not_announced_again(stack):
    job_id = create_job(stack)
    notify(stack, notification("success", job_id))
    first = stack.store().get(job_id)
    assert notify(stack, notification("success", job_id)) == []

    assert stack.store().get(job_id).model_dump(exclude={"details"}) == first.model_dump(exclude={"details"})
    assert stack.store().get(job_id).status == JobStatus.SUCCEEDED
    streams.wait_until_idle()
    assert len(stack.job_events(job_id, wait=1)) == 1


def test_out_of_order_error_after_success_changes_nothing(stack):
    job_id = create_job(stack)
    notify(stack, notification("success", job_id))
    assert notify(stack, notification("error", job_id)) == []

    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.failure_reason is None
    assert [event["job"]["status"] for event in stack.job_events(job_id, wait=1)] == ["SUCCEEDED"]


def test_notification_for_an_unknown_job_is_logged_and_skipped(stack):
    assert notify(stack, notification("success", "job-never-created")) == []  # skipped, not failed

    assert stack.store().get("job-never-created") is None


def test_malformed_messages_are_skipped_and_the_valid_ones_in_the_batch_applied(stack):
    job_id = create_job(stack)
    event = load_event("async_notifications/malformed.json")
    no_id = notification("success", job_id, message={"invocationStatus": "Completed"})
    no_output = notification("success", job_id, message={"invocationStatus": "Completed", "inferenceId": job_id})
    valid = notification("success", job_id)
    event["Records"] += no_id["Records"] + no_output["Records"] + valid["Records"]

    assert notify(stack, event) == []  # the malformed ones are skipped, not retried

    assert stack.store().get(job_id).status == JobStatus.SUCCEEDED


def test_a_transient_dynamodb_error_fails_only_that_record_so_sqs_delivers_it_again(stack):
    throttled, fine = create_job(stack), create_job(stack)
    event = notification("success", throttled)
    event["Records"] += notification("success", fine)["Records"]
    from moto.dynamodb.exceptions import DynamodbException
    from moto.dynamodb.models import DynamoDBBackend

    original = DynamoDBBackend.get_item

    def get_item(backend, table_name, keys, *args, **kwargs):
        if keys.get("job_id", {}).get("S") == throttled:
            raise DynamodbException(
                "ProvisionedThroughputExceededException", "Rate of requests exceeds the allowed throughput."
            )
        return original(backend, table_name, keys, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(DynamoDBBackend, "get_item", get_item)
        failed = notify(stack, event)

    assert failed == [event["Records"][0]["messageId"]]
    assert stack.store().get(throttled).status == JobStatus.RUNNING
    assert stack.store().get(fine).status == JobStatus.SUCCEEDED
    # Delivered again (as SQS does after the visibility timeout), it finishes the job.
    assert notify(stack, {"Records": event["Records"][:1]}) == []
    assert stack.store().get(throttled).status == JobStatus.SUCCEEDED


def forged(job_id: str, **request_parameters: str) -> dict:
    event = notification("success", job_id)
    record = event["Records"][0]
    message = json.loads(record["body"])
    message["requestParameters"].update(request_parameters)
    record["body"] = json.dumps(message)
    return event


@pytest.mark.parametrize(
    "request_parameters",
    [
        {"endpointName": "sluice-attacker-async"},
        {"inputLocation": "s3://sluice-data-123456789012-us-east-1/async/team-fraud/job-x/input"},
    ],
    ids=["another-endpoint", "another-input"],
)
def test_a_forged_notification_naming_another_endpoint_or_input_does_not_finish_the_job(stack, request_parameters):
    job_id = create_job(stack)
    assert notify(stack, forged(job_id, **request_parameters)) == []

    job = stack.store().get(job_id)
    assert job.status == JobStatus.RUNNING
    assert job.output_location is None
    assert stack.job_events(job_id, wait=1) == []


def test_a_forged_success_naming_another_output_than_sagemaker_announced_does_not_finish_the_job(stack):
    job_id = create_job(stack)
    announced = f"s3://sluice-data-123456789012-us-east-1/async/team-risk/{job_id}/output"
    stack.store().update_details(job_id, output_location=announced)
    event = notification("success", job_id)
    record = event["Records"][0]
    message = json.loads(record["body"])
    message["responseParameters"]["outputLocation"] = "s3://attacker-bucket/planted/output"
    record["body"] = json.dumps(message)

    assert notify(stack, event) == []

    job = stack.store().get(job_id)
    assert job.status == JobStatus.RUNNING
    assert job.output_location == announced


def test_a_sagemaker_notification_cannot_finish_a_job_the_state_machine_runs(stack):
    job_id = new_job_id()
    stack.store().create(
        Job(
            job_id=job_id,
            caller=CALLER,
            kind=JobKind.ASYNC,
            model="scorer",
            status=JobStatus.RUNNING,
            input_location=SAMPLE_INPUT.format(job_id=job_id),
            details={"runner": "state-machine"},
        )
    )
    assert notify(stack, notification("success", job_id)) == []

    assert stack.store().get(job_id).status == JobStatus.RUNNING


def test_a_notification_published_to_the_success_topic_reaches_the_function_through_its_queue(stack):
    job_id = create_job(stack)
    message = notification("success", job_id)["Records"][0]["body"]
    stack.client("sns").publish(TopicArn=stack.deployment.outputs["AsyncSuccessTopicArn"], Message=message)

    # SNS -> AsyncNotificationsQueue (raw delivery) -> its event source mapping -> the function.
    deadline = time.monotonic() + 5
    while stack.store().get(job_id).status != JobStatus.SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.store().get(job_id).status == JobStatus.SUCCEEDED
    [event] = stack.job_events(job_id, wait=3)
    assert event["job"]["status"] == "SUCCEEDED"


# ---------------------------------------------------------------------- callbacks through the workflow
def run_async_job(stack, callback: Callback) -> tuple[str, dict]:
    job_id = new_job_id()
    input_key = async_input_key(CALLER, job_id)
    body = json.dumps({"key": job_id, "script": ["ok"], "instances": [[1, 1]]})
    stack.client("s3").put_object(Bucket=stack.bucket, Key=input_key, Body=body)
    stack.store().create(
        Job(
            job_id=job_id,
            caller=CALLER,
            kind=JobKind.ASYNC,
            model="scorer",
            input_location=s3_uri(stack.bucket, input_key),
            callback=callback,
        )
    )
    execution_input = AsyncExecutionInput(
        job_id=job_id,
        caller=CALLER,
        model="scorer",
        input_bucket=stack.bucket,
        input_key=input_key,
        output_bucket=stack.bucket,
        output_key=async_output_key(CALLER, job_id),
        content_type="application/json",
        callback=callback,
    )
    execution = run_execution(stack, "AsyncInferenceStateMachineArn", execution_input.model_dump(mode="json"))
    return job_id, execution


def test_sns_callback_publishes_the_final_job_to_the_callers_topic(stack):
    topic = stack.client("sns").create_topic(Name="caller-results")["TopicArn"]
    queue = subscribe_queue(stack.url, topic, "caller-results-inbox")
    job_id, execution = run_async_job(stack, Callback(sns_topic_arn=topic))

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"])[-1] == "Job finished"
    streams.wait_until_idle()
    [message] = drain(stack.client("sqs"), queue)
    assert message["type"] == "sluice.job.finished"
    assert message["job"]["id"] == job_id
    assert message["job"]["status"] == "SUCCEEDED"
    job = stack.store().get(job_id)
    assert job.details["notification"] == {"delivered": True, "channel": "sns", "target": topic}


def test_sns_callback_to_a_topic_the_platform_does_not_allow_is_refused_and_noted(stack):
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses-topic"
    job_id, execution = run_async_job(stack, Callback(sns_topic_arn=topic))

    assert execution["status"] == "SUCCEEDED"
    streams.wait_until_idle()
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    note = job.details["notification"]
    assert note["delivered"] is False
    assert "not among the callback topics allowed for this caller" in note["reason"]


def test_tenant_cannot_make_sluice_publish_into_another_tenants_allowed_topic(stack):
    # other-results is allowed for OTHER_CALLER and inside the stack's ceiling, but not CALLER's.
    topic = stack.client("sns").create_topic(Name="other-results")["TopicArn"]
    queue = subscribe_queue(stack.url, topic, "other-results-inbox")
    job_id, execution = run_async_job(stack, Callback(sns_topic_arn=topic))

    assert execution["status"] == "SUCCEEDED"
    streams.wait_until_idle()
    assert drain(stack.client("sqs"), queue) == []
    note = stack.store().get(job_id).details["notification"]
    assert note["delivered"] is False
    assert "not among the callback topics allowed for this caller" in note["reason"]


def parked(stack) -> list[dict]:
    """The batch descriptions the announcer's event source mapping sent to its OnFailure DLQ."""
    sqs = stack.client("sqs")
    url = stack.deployment.outputs["JobAnnouncerDeadLetterQueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(message["Body"]) for message in messages]


def pending_marker(stack, job_id: str) -> bool:
    item = stack.client("dynamodb").get_item(
        TableName=stack.deployment.outputs["JobsTableName"], Key={"job_id": {"S": job_id}}, ConsistentRead=True
    )["Item"]
    return "announce_pending" in item


def test_an_unreachable_webhook_is_retried_then_parked_with_the_job_still_pending(stack):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    parked(stack)
    job_id, execution = run_async_job(stack, Callback(webhook_url=f"https://127.0.0.1:{port}/hooks"))

    assert execution["status"] == "SUCCEEDED"
    assert streams.wait_until_idle()
    [batch] = parked(stack)
    assert batch["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert batch["DDBStreamBatchInfo"]["batchSize"] == 1
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    # The job events went out once; the callback did not, and the outbox marker keeps it on the reaper's list.
    assert set(job.details["announcement"]) >= {"events"}
    assert "callback" not in job.details["announcement"]
    assert pending_marker(stack, job_id)
    assert len(stack.job_events(job_id)) == 1


def test_webhook_callback_is_signed_with_the_callers_secret_over_timestamp_and_body(stack, receiver):
    job_id, execution = run_async_job(stack, Callback(webhook_url=f"{receiver.url}/hooks/ok"))

    assert execution["status"] == "SUCCEEDED"
    streams.wait_until_idle()
    [request] = [r for r in receiver.to("/hooks/ok") if json.loads(r["body"])["job"]["id"] == job_id]
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert headers["content-type"] == "application/json"
    assert headers[DELIVERY_HEADER.lower()] == f"{job_id}:SUCCEEDED"
    signature, timestamp = headers[SIGNATURE_HEADER.lower()], headers[TIMESTAMP_HEADER.lower()]
    assert abs(int(timestamp) - time.time()) < 60
    assert signature == sign_webhook(WEBHOOK_SECRET, request["body"], int(timestamp))
    window = get_settings().webhook_replay_window_seconds
    assert verify_webhook(
        WEBHOOK_SECRET, request["body"], timestamp, signature, now=time.time(), tolerance_seconds=window
    )
    assert not verify_webhook(
        "another-secret", request["body"], timestamp, signature, now=time.time(), tolerance_seconds=window
    )
    body = json.loads(request["body"])
    assert body["job"]["status"] == "SUCCEEDED"
    assert body["job"]["output_location"].endswith(f"/{job_id}/output")
    assert "callback" not in body["job"]
    job = stack.store().get(job_id)
    assert job.details["notification"]["delivered"] is True
    assert job.details["notification"]["status_code"] == 200
    assert not pending_marker(stack, job_id)


def test_webhook_failure_is_retried_parked_then_announced_once_by_the_backstop(stack, receiver):
    from sluice.jobs.announcer import default_announcer

    receiver.status_for["/hooks/down"] = 503
    parked(stack)
    job_id, execution = run_async_job(stack, Callback(webhook_url=f"{receiver.url}/hooks/down"))

    assert execution["status"] == "SUCCEEDED"
    assert streams.wait_until_idle()
    calls = [r for r in receiver.to("/hooks/down") if json.loads(r["body"])["job"]["id"] == job_id]
    assert len(calls) == 3  # the first delivery and AnnouncerMaxRetryAttempts (2) retries
    assert len({call["body"] for call in calls}) == 1  # the same body (and delivery id) every time
    assert len(parked(stack)) == 1
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED  # a callback never fails the job
    assert pending_marker(stack, job_id)

    # The receiver recovers; the reaper's backstop finds the job and announces only what is missing.
    receiver.status_for["/hooks/down"] = 200
    announcer = default_announcer()
    assert job_id in [pending.job_id for pending in announcer.pending_announcements(0)]
    assert announcer.announce(job) == "announced"
    assert announcer.announce(job) == "already_announced"
    calls = [r for r in receiver.to("/hooks/down") if json.loads(r["body"])["job"]["id"] == job_id]
    assert len(calls) == 4
    assert len(stack.job_events(job_id)) == 1
    assert not pending_marker(stack, job_id)
    assert stack.store().get(job_id).details["notification"]["delivered"] is True


@pytest.mark.parametrize("code", ["Throttled", "KMSThrottling"], ids=["sns-throttling", "kms-throttling"])
def test_a_throttled_job_events_topic_is_retried_by_the_event_source_mapping_then_parked(stack, code):
    from moto.sns.exceptions import SNSException
    from moto.sns.models import Topic

    class Refused(SNSException):
        pass

    Refused.code, Refused.message = code, "injected throttling"
    events_topic = stack.deployment.outputs["JobEventsTopicArn"]
    attempts = []
    original = Topic.publish

    def publish(topic, *args, **kwargs):
        if topic.arn == events_topic:
            attempts.append(1)
            raise Refused()
        return original(topic, *args, **kwargs)

    parked(stack)
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(Topic, "publish", publish)
        job_id, execution = run_async_job(stack, Callback(webhook_url="https://127.0.0.1:9/never"))
        assert execution["status"] == "SUCCEEDED"
        assert streams.wait_until_idle()

    # The first delivery and AnnouncerMaxRetryAttempts (2) retries, then the batch is parked.
    assert len(attempts) == 3
    [batch] = parked(stack)
    assert batch["requestContext"]["condition"] == "RetryAttemptsExhausted"
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert "events" not in job.details.get("announcement", {})
    assert pending_marker(stack, job_id)
