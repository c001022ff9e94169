"""The job workflow tests' world: template.yaml in an in-process moto server, the real ASL run by moto's
interpreter, the template's functions run in-process, and a scripted SageMaker runtime on loopback.

Waits and retry intervals come from stack parameters (1 s, JitterStrategy FULL makes most waits
shorter). moto is adjusted in-process only where the tests need to steer it, each time said here:

- transform jobs: moto marks them Completed at once; `TransformScript` makes chosen jobs report
  InProgress, Failed (with a FailureReason) or Stopped, and CreateTransformJob answer errors. It also
  gives moto what AWS does and moto lacks: CreateTransformJob of an existing name is ResourceInUse (moto
  overwrites it), and StopTransformJob exists (an InProgress job becomes Stopped; AWS passes through
  Stopping); and it lets a test act at a chosen moment (before or after a create, at a status check).
- aws-sdk error names: moto names an SDK integration's error after the lower-case service
  ("sagemaker.sagemakerException"); Step Functions uses the PascalCase service and, for errors the
  SDK does not model, Amazon<Service>Exception ("SageMaker.AmazonSageMakerException"). The shim gives
  moto AWS's names, so the definitions' Retry/Catch are tested with the names they meet on AWS.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from sluice.jobs.webhook_secrets import secret_parameter_name
from sluice_local.config import LOOPBACK
from sluice_local.deploy import Deployment, connect_event_sources, deploy_template
from sluice_local.emulator import start_moto
from sluice_local.lambdas import LambdaRunner, function_environment, install_moto_lambda_router
from tests.conftest import ROOT

REGION = "us-east-1"
ACCOUNT = "123456789012"
CALLER = "team-risk"
WEBHOOK_SECRET = "whsec-test-0123456789abcdef"
# The stack's ceiling; CALLER may use its own caller-* topics, OTHER_CALLER its other-* topics.
CALLBACK_TOPIC_CEILING = f"arn:aws:sns:{REGION}:{ACCOUNT}:*"
CALLER_TOPIC_PATTERN = f"arn:aws:sns:{REGION}:{ACCOUNT}:caller-*"
OTHER_CALLER = "team-fraud"
OTHER_CALLER_TOPIC_PATTERN = f"arn:aws:sns:{REGION}:{ACCOUNT}:other-*"
APPROVAL_TIMEOUT_HOURS = 0.0015

# Every wait and retry of the workflows at its minimum.
TEST_PARAMETERS = {
    "InferenceRetryIntervalSeconds": "1",
    "InferenceRetryMaxAttempts": "2",
    "InferenceRetryBackoffRate": "1",
    "TransformPollSeconds": "1",
    "TransformPollMaxSeconds": "2",
    "TransformMaxPolls": "3",
    "TransformMaxAttempts": "3",
    "TransformRetryWaitSeconds": "1",
    "SdkRetryIntervalSeconds": "1",
    "SdkRetryMaxAttempts": "2",
    "StepRetryIntervalSeconds": "1",
    # The announcer's stream: a failing announcement is retried twice, then parked in its DLQ.
    "AnnouncerMaxRetryAttempts": "2",
    "CatalogTtlSeconds": "5",
    "CallbackSettingsTtlSeconds": "5",
    "CallbackTopicArnPatterns": CALLBACK_TOPIC_CEILING,
    # 0.0015 h = 5 s: long enough for a test to decide, short enough to wait out a timeout.
    "ApprovalTimeoutHours": str(APPROVAL_TIMEOUT_HOURS),
}


# ---------------------------------------------------------------------- a scripted SageMaker runtime
class FakeRuntime:
    """InvokeEndpoint on loopback. The request body names its script: {"key": ..., "script": [...]}; the
    n-th call with a key plays script[n] (the last one repeats): "ok", "throttle", "unavailable",
    "model_error", "invalid", or "cancel:<job id>" (the job is cancelled meanwhile, then "ok")."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.on_cancel: Any = None
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                runtime.answer(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        request = json.loads(body)
        key = request["key"]
        script = request.get("script") or ["ok"]
        step = script[min(self.calls[key], len(script) - 1)]
        self.calls[key] += 1
        if step.startswith("cancel:"):
            self.on_cancel(step.split(":", 1)[1])
            step = "ok"
        if step == "ok":
            payload = json.dumps({"predictions": [sum(row) for row in request.get("instances", [])]}).encode()
            self._send(handler, 200, payload, {"X-Amzn-Invoked-Production-Variant": "v1"})
            return
        errors = {
            "throttle": (429, "ThrottlingException", "Rate exceeded", {}),
            "unavailable": (503, "ServiceUnavailable", "The endpoint is scaling out", {}),
            "invalid": (400, "ValidationError", "Input has 3 features, expected 4", {}),
            "model_error": (
                424,
                "ModelError",
                "Received client error (400) from primary",
                {"OriginalStatusCode": 400, "OriginalMessage": "input has 3 features, expected 4"},
            ),
        }
        status, code, message, fields = errors[step]
        payload = json.dumps({"__type": code, "message": message, **fields}).encode()
        self._send(handler, status, payload, {"X-Amzn-ErrorType": code})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict[str, str]) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)


# ---------------------------------------------------------------------- steering moto's SageMaker
@dataclass
class TransformScript:
    """What chosen transform jobs report, by job name: a list of (status, failure reason) played one
    per DescribeTransformJob (the last repeats); and errors CreateTransformJob answers, by name prefix,
    one per call: (code, message), e.g. ("ThrottlingException", "Rate exceeded"). `before_create` /
    `after_create` / `on_describe` run a test's action (a cancel, say) at that moment, by job name."""

    statuses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    create_errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    before_create: dict[str, Any] = field(default_factory=dict)
    after_create: dict[str, Any] = field(default_factory=dict)
    on_describe: dict[str, Any] = field(default_factory=dict)
    # Errors DescribeTransformJob answers first, by job name, one per call: (code, message).
    describe_errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def install(self, patcher: pytest.MonkeyPatch) -> None:
        from moto.core.exceptions import JsonRESTError
        from moto.core.responses import EmptyResult
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        script = self
        create, describe = SageMakerModelBackend.create_transform_job, SageMakerModelBackend.describe_transform_job

        def create_transform_job(backend: Any, transform_job_name: str, **kwargs: Any) -> Any:
            for prefix, errors in script.create_errors.items():
                if transform_job_name.startswith(prefix) and errors:
                    raise JsonRESTError(*errors.pop(0))
            if transform_job_name in backend.transform_jobs:
                raise JsonRESTError("ResourceInUse", f"Job {transform_job_name} already exists.")
            if transform_job_name in script.before_create:
                script.before_create.pop(transform_job_name)()
            job = create(backend, transform_job_name=transform_job_name, **kwargs)
            if transform_job_name in script.statuses:
                # Running from the start, as on AWS, until a status check plays the script.
                job.transform_job_status = "InProgress"
            script.created.append({"TransformJobName": transform_job_name, **kwargs})
            if transform_job_name in script.after_create:
                script.after_create.pop(transform_job_name)()
            return job

        def describe_transform_job(backend: Any, transform_job_name: str) -> Any:
            if script.describe_errors.get(transform_job_name):
                raise JsonRESTError(*script.describe_errors[transform_job_name].pop(0))
            plays = script.statuses.get(transform_job_name)
            job = backend.transform_jobs.get(transform_job_name)
            if plays and job is not None and transform_job_name not in script.stopped:
                status, reason = plays.pop(0) if len(plays) > 1 else plays[0]
                job.transform_job_status, job.failure_reason = status, reason
            if transform_job_name in script.on_describe and job is not None:
                script.on_describe.pop(transform_job_name)()
            return describe(backend, transform_job_name)

        def stop_transform_job(response: Any) -> Any:
            name = response._get_param("TransformJobName")
            job = response.sagemaker_backend.transform_jobs.get(name)
            if job is None:
                raise JsonRESTError("ValidationException", f"Could not find job to update with name {name}")
            if job.transform_job_status not in ("InProgress", "Stopping"):
                raise JsonRESTError("ValidationException", f"Job {name} is {job.transform_job_status}: not stoppable")
            job.transform_job_status = "Stopped"
            script.stopped.append(name)
            return EmptyResult()

        patcher.setattr(SageMakerModelBackend, "create_transform_job", create_transform_job)
        patcher.setattr(SageMakerModelBackend, "describe_transform_job", describe_transform_job)
        patcher.setattr(SageMakerResponse, "stop_transform_job", stop_transform_job, raising=False)

    def status_of(self, backend_name: str) -> str:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION].transform_jobs[backend_name].transform_job_status


def aws_sdk_error_names(patcher: pytest.MonkeyPatch) -> None:
    """moto's aws-sdk integration errors under the names Step Functions gives them on AWS."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_aws_sdk as aws_sdk,
    )

    patcher.setitem(aws_sdk._SERVICE_ERROR_NAMES, "sagemaker", "SageMaker")
    patcher.setitem(aws_sdk._SERVICE_ERROR_NAMES, "s3", "S3")

    def exception_name(service: str, ex: Exception) -> str:
        name = ex.__class__.__name__
        name = f"{service}.Amazon{service}" if name == "ClientError" else f"{service}.{name}"
        return name if name.endswith("Exception") else f"{name}Exception"

    patcher.setattr(aws_sdk.StateTaskServiceAwsSdk, "_normalise_exception_name", staticmethod(exception_name))


# ---------------------------------------------------------------------- the stack
@dataclass
class JobsStack:
    url: str
    deployment: Deployment
    runner: LambdaRunner
    runtime: FakeRuntime
    transforms: TransformScript
    job_events_queue: str
    seen_events: list[dict[str, Any]] = field(default_factory=list)

    def client(self, service: str, region: str = REGION) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    @property
    def bucket(self) -> str:
        return self.deployment.outputs["DataBucketName"]

    def store(self) -> Any:
        from sluice.jobs.store import JobStore

        return JobStore(self.client("dynamodb"), self.deployment.outputs["JobsTableName"])

    def job_events(self, job_id: str, wait: float = 0.0) -> list[dict[str, Any]]:
        """Completion events published to the job events topic for this job (via an SQS subscription)."""
        deadline = time.monotonic() + wait
        while True:
            self.seen_events.extend(drain(self.client("sqs"), self.job_events_queue))
            found = [event for event in self.seen_events if event["job"]["id"] == job_id]
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Messages from an SNS->SQS subscription, as the published message bodies."""
    messages = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            envelope = json.loads(message["Body"])
            messages.append(json.loads(envelope["Message"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def subscribe_queue(stack_url: str, topic_arn: str, name: str) -> str:
    kwargs = {"endpoint_url": stack_url, "region_name": REGION, "aws_access_key_id": "l", "aws_secret_access_key": "l"}
    sqs, sns = boto3.client("sqs", **kwargs), boto3.client("sns", **kwargs)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return queue_url


def _reset_process_caches() -> None:
    """Settings, catalog, backend clients and Powertools parameters are cached per process: the
    handlers must build theirs against this stack (and later tests against theirs)."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS

    from sluice import clients
    from sluice.jobs import notify_sources
    from sluice.request import access
    from sluice.settings import get_settings

    get_settings.cache_clear()
    access.catalog_store.cache_clear()
    clients.get.cache_clear()
    parameters.clear_caches()
    DEFAULT_PROVIDERS.clear()
    notify_sources.reset()


@contextmanager
def jobs_stack(
    stack_name: str, catalog: dict[str, Any], extra_env: dict[str, str] | None = None
) -> Iterator[JobsStack]:
    server = start_moto(LOOPBACK, 0)
    runtime = FakeRuntime()
    patcher = pytest.MonkeyPatch()
    uninstall = None
    try:
        deployment = deploy_template(
            ROOT / "template.yaml",
            aws_url=server.url,
            stack_name=stack_name,
            region=REGION,
            parameters=TEST_PARAMETERS,
            # Subscriptions (AsyncSuccessTopic -> AsyncNotificationsFunction) once moto runs the handlers.
            connect_events=False,
        )
        for name, value in function_environment(deployment, server.url, REGION).items():
            patcher.setenv(name, value)
        patcher.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
        # One HTTP call per Lambda invocation: the state machine's Retry is what is under test.
        patcher.setenv("SLUICE_BACKEND_MAX_ATTEMPTS", "1")
        patcher.setenv("SLUICE_WEBHOOK_ALLOW_PRIVATE_HOSTS", "true")
        patcher.setenv("POWERTOOLS_TRACE_DISABLED", "true")
        for name, value in (extra_env or {}).items():
            patcher.setenv(name, value)
        _reset_process_caches()
        aws_sdk_error_names(patcher)
        transforms = TransformScript()
        transforms.install(patcher)

        stack = JobsStack(
            url=server.url,
            deployment=deployment,
            runner=LambdaRunner(deployment.functions, ROOT),
            runtime=runtime,
            transforms=transforms,
            job_events_queue="",
        )
        stack.client("ssm").put_parameter(
            Name=deployment.outputs["CatalogParameterName"], Value=json.dumps(catalog), Type="String", Overwrite=True
        )
        # moto's backends are process-wide: names other stacks of this run may have created already.
        # CALLER's own webhook secret, as `tools/keys.py webhook-secret` stores it.
        stack.client("ssm").put_parameter(
            Name=secret_parameter_name(f"/sluice/{stack_name}/webhook-secrets", CALLER),
            Value=WEBHOOK_SECRET,
            Type="SecureString",
            Overwrite=True,
        )
        topics = {"version": 1, "callers": {CALLER: [CALLER_TOPIC_PATTERN], OTHER_CALLER: [OTHER_CALLER_TOPIC_PATTERN]}}
        stack.client("ssm").put_parameter(
            Name=f"/sluice/{stack_name}/callback-topics", Value=json.dumps(topics), Type="String", Overwrite=True
        )
        stack.job_events_queue = subscribe_queue(
            server.url, deployment.outputs["JobEventsTopicArn"], f"{stack_name}-job-events"
        )
        runtime.on_cancel = lambda job_id: stack.store().transition(job_id, _cancelled())
        uninstall = install_moto_lambda_router(stack.runner)
        connect_event_sources(deployment)
        yield stack
    finally:
        if uninstall:
            uninstall()
        patcher.undo()
        _reset_process_caches()
        runtime.stop()
        server.stop()


def _cancelled() -> Any:
    from sluice.jobs.models import JobStatus

    return JobStatus.CANCELLED


# ---------------------------------------------------------------------- executions
def run_execution(stack: JobsStack, output_key: str, execution_input: dict[str, Any], timeout: float = 30) -> dict:
    """Start the state machine named by a stack output (execution named by job id, as submission does)."""
    return wait_for_execution(stack, start_execution(stack, output_key, execution_input), timeout)


def start_execution(stack: JobsStack, output_key: str, execution_input: dict[str, Any]) -> str:
    return stack.client("stepfunctions").start_execution(
        stateMachineArn=stack.deployment.outputs[output_key],
        name=execution_input["job_id"],
        input=json.dumps(execution_input),
    )["executionArn"]


def wait_for_execution(stack: JobsStack, execution_arn: str, timeout: float = 30) -> dict:
    stepfunctions = stack.client("stepfunctions")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = stepfunctions.describe_execution(executionArn=execution_arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_arn} still running after {timeout} s")


def history(stack: JobsStack, execution_arn: str) -> list[dict[str, Any]]:
    pages = stack.client("stepfunctions").get_paginator("get_execution_history")
    return [event for page in pages.paginate(executionArn=execution_arn) for event in page["events"]]


def states_entered(stack: JobsStack, execution_arn: str) -> list[str]:
    """The path taken: state names in the order they were entered."""
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in history(stack, execution_arn)
        if "stateEnteredEventDetails" in event
    ]


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex[:20]}"


# ---------------------------------------------------------------------- approvals, as an operator sees them
def pending_approval(stack: Any, kind: str, job_id: str, timeout: float = 10) -> Any:
    """The approval a workflow asked for, once its job shows AWAITING_APPROVAL: the request is recorded
    first and the job moved next (sluice.approvals.requests), so a test must not look in between."""
    from sluice.approvals.models import approval_id_for
    from sluice.approvals.store import ApprovalStore
    from sluice.jobs.models import JobStatus

    approvals = ApprovalStore(stack.client("dynamodb"), stack.deployment.outputs["ApprovalsTableName"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        approval = approvals.get(approval_id_for(kind, job_id))
        if approval is not None and stack.store().get(job_id).status == JobStatus.AWAITING_APPROVAL:
            return approval
        time.sleep(0.05)
    raise AssertionError(f"no approval requested for {job_id}")


def decide(lambda_context: Any, decision: str, approval_id: str, reason: str) -> dict:
    """An operator approves or denies through the API (POST /v1/approvals/{id}/approve|deny)."""
    from tests.api_support import event
    from tests.conftest import load_handler
    from tests.jobs_support import for_path_id

    evt = for_path_id(event(f"approval-{decision}", body={"reason": reason}), "approval_id", approval_id)
    return load_handler("api").lambda_handler(evt, lambda_context)
