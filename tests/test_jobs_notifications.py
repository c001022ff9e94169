"""Completion announcements and SageMaker's own async notifications.

- async_notifications: SageMaker's InferenceResult messages (events/async_notifications/) move the job
  whose id is the inferenceId, once; duplicates, late errors, unknown ids and malformed messages
  change nothing and never raise. One scenario goes through the template's SNS subscription.
- job_notifier, through the async state machine: the caller's SNS topic, an HMAC-signed webhook on a
  loopback HTTPS server (its certificate trusted through SSL_CERT_FILE), and a failing webhook that
  is retried, then recorded, while the job keeps its status.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.models import Callback, Job, JobKind, JobStatus
from sluice.jobs.notify import DELIVERY_HEADER
from sluice.jobs.webhook_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook, verify_webhook
from sluice.settings import get_settings
from sluice.storage.keys import async_input_key, async_output_key, s3_uri
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
    record = event["Records"][0]["Sns"]
    body = json.loads(record["Message"]) if message is None else message
    text = json.dumps(body).replace("01JD7QF0R2T4V6X8Z0B2D4F6H8", job_id)
    record["Message"] = text
    return event


def notify(stack, event: dict) -> dict:
    return stack.runner.invoke("AsyncNotificationsFunction", event)


def test_success_notification_marks_the_job_succeeded_with_sagemakers_output_and_announces_it(stack):
    job_id = create_job(stack)
    counts = notify(stack, notification("success", job_id))

    assert counts["succeeded"] == 1
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.output_location == f"s3://sluice-data-123456789012-us-east-1/async/team-risk/{job_id}/output"
    assert job.details["endpoint_name"] == "sluice-llm-async"
    assert job.details["content_type"] == "application/json"
    [event] = stack.job_events(job_id, wait=2)
    assert event["job"]["status"] == "SUCCEEDED"


def test_error_notification_marks_the_job_failed_with_sagemakers_reason(stack):
    job_id = create_job(stack, status=JobStatus.QUEUED)
    counts = notify(stack, notification("error", job_id))

    assert counts["failed"] == 1
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
    counts = notify(stack, notification("success", job_id))

    assert counts == {"succeeded": 0, "failed": 0, "unchanged": 1, "unknown_job": 0, "mismatch": 0, "malformed": 0}
    assert stack.store().get(job_id) == first
    assert len(stack.job_events(job_id, wait=1)) == 1


def test_out_of_order_error_after_success_changes_nothing(stack):
    job_id = create_job(stack)
    notify(stack, notification("success", job_id))
    counts = notify(stack, notification("error", job_id))

    assert counts["unchanged"] == 1
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.failure_reason is None
    assert [event["job"]["status"] for event in stack.job_events(job_id, wait=1)] == ["SUCCEEDED"]


def test_notification_for_an_unknown_job_is_logged_and_skipped(stack):
    counts = notify(stack, notification("success", "job-never-created"))

    assert counts["unknown_job"] == 1
    assert stack.store().get("job-never-created") is None


def test_malformed_messages_are_skipped_and_the_valid_ones_in_the_batch_applied(stack):
    job_id = create_job(stack)
    event = load_event("async_notifications/malformed.json")
    no_id = notification("success", job_id, message={"invocationStatus": "Completed"})
    no_output = notification("success", job_id, message={"invocationStatus": "Completed", "inferenceId": job_id})
    valid = notification("success", job_id)
    event["Records"] += no_id["Records"] + no_output["Records"] + valid["Records"]

    counts = notify(stack, event)

    assert counts == {"succeeded": 1, "failed": 0, "unchanged": 0, "unknown_job": 0, "mismatch": 0, "malformed": 3}
    assert stack.store().get(job_id).status == JobStatus.SUCCEEDED


def forged(job_id: str, **request_parameters: str) -> dict:
    event = notification("success", job_id)
    record = event["Records"][0]["Sns"]
    message = json.loads(record["Message"])
    message["requestParameters"].update(request_parameters)
    record["Message"] = json.dumps(message)
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
    counts = notify(stack, forged(job_id, **request_parameters))

    assert counts["mismatch"] == 1
    assert counts["succeeded"] == 0
    job = stack.store().get(job_id)
    assert job.status == JobStatus.RUNNING
    assert job.output_location is None
    assert stack.job_events(job_id, wait=1) == []


def test_a_forged_success_naming_another_output_than_sagemaker_announced_does_not_finish_the_job(stack):
    job_id = create_job(stack)
    announced = f"s3://sluice-data-123456789012-us-east-1/async/team-risk/{job_id}/output"
    stack.store().update_details(job_id, output_location=announced)
    event = notification("success", job_id)
    record = event["Records"][0]["Sns"]
    message = json.loads(record["Message"])
    message["responseParameters"]["outputLocation"] = "s3://attacker-bucket/planted/output"
    record["Message"] = json.dumps(message)

    counts = notify(stack, event)

    assert counts["mismatch"] == 1
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
    counts = notify(stack, notification("success", job_id))

    assert counts["mismatch"] == 1
    assert stack.store().get(job_id).status == JobStatus.RUNNING


def test_a_notification_published_to_the_success_topic_reaches_the_function_through_its_subscription(stack):
    job_id = create_job(stack)
    message = notification("success", job_id)["Records"][0]["Sns"]["Message"]
    stack.client("sns").publish(TopicArn=stack.deployment.outputs["AsyncSuccessTopicArn"], Message=message)

    assert stack.store().get(job_id).status == JobStatus.SUCCEEDED


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
    assert states_entered(stack, execution["executionArn"])[-3:] == [
        "Callback requested?",
        "Notify caller",
        "Job announced",
    ]
    [message] = drain(stack.client("sqs"), queue)
    assert message["type"] == "sluice.job.finished"
    assert message["job"]["job_id"] == job_id
    assert message["job"]["status"] == "SUCCEEDED"
    job = stack.store().get(job_id)
    assert job.details["notification"] == {"delivered": True, "channel": "sns", "target": topic}


def test_sns_callback_to_a_topic_the_platform_does_not_allow_is_refused_and_noted(stack):
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses-topic"
    job_id, execution = run_async_job(stack, Callback(sns_topic_arn=topic))

    assert execution["status"] == "SUCCEEDED"
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
    assert drain(stack.client("sqs"), queue) == []
    note = stack.store().get(job_id).details["notification"]
    assert note["delivered"] is False
    assert "not among the callback topics allowed for this caller" in note["reason"]


def test_an_unreachable_webhook_is_retried_then_recorded_with_a_generic_reason(stack):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    job_id, execution = run_async_job(stack, Callback(webhook_url=f"https://127.0.0.1:{port}/hooks"))

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"])[-3:] == [
        "Notify caller",
        "Record notification failure",
        "Job announced",
    ]
    note = stack.store().get(job_id).details["notification"]
    assert note["delivered"] is False
    assert note["reason"] == "Not delivered: the webhook could not be reached."


def test_webhook_callback_is_signed_with_the_callers_secret_over_timestamp_and_body(stack, receiver):
    job_id, execution = run_async_job(stack, Callback(webhook_url=f"{receiver.url}/hooks/ok"))

    assert execution["status"] == "SUCCEEDED"
    [request] = [r for r in receiver.to("/hooks/ok") if json.loads(r["body"])["job"]["job_id"] == job_id]
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


def test_webhook_failure_is_retried_then_recorded_and_never_fails_the_job(stack, receiver):
    receiver.status_for["/hooks/down"] = 503
    job_id, execution = run_async_job(stack, Callback(webhook_url=f"{receiver.url}/hooks/down"))

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"])[-3:] == [
        "Notify caller",
        "Record notification failure",
        "Job announced",
    ]
    calls = [r for r in receiver.to("/hooks/down") if json.loads(r["body"])["job"]["job_id"] == job_id]
    assert len(calls) == 2  # the first call and CallbackRetryMaxAttempts (1) retry
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["notification"]["delivered"] is False
    assert job.details["notification"]["error"] == "CallbackFailed"
    assert "answered 503" in job.details["notification"]["reason"]
