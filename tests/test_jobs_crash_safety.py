"""Idempotency-Key after a crash: the function dies after a side effect of job creation, its
in-progress idempotency record expires, and the client's retry with the same key lands on the same job.

A dying Lambda is an exception nothing in the function catches (`LambdaDied`, a BaseException raised
from a botocore `after-call` hook, so the call itself has happened): Powertools keeps the record
INPROGRESS, as when the runtime kills an invocation, until the remaining time of the Lambda context
(registered by sluice.jobs.idempotency.once) has passed. Then the retry runs creation again and every
side effect must be safe to repeat: one input object, one job row, one execution, one InvokeEndpointAsync.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from sluice import clients
from sluice.jobs.idempotency import job_id_for
from sluice.jobs.models import JobStatus
from sluice.settings import get_settings
from tests.api_support import body_of, call, event, set_header
from tests.conftest import shared_client
from tests.jobs_support import DATA_BUCKET, IDEMPOTENCY_TABLE, JOBS_TABLE, create_jobs_stack, for_model

IRIS_ROWS = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'
# How long the dying invocation had left: its in-progress record blocks the key that long (long enough
# that the dying attempt and the 409 check finish within it on a loaded machine).
REMAINING_MS = 1500


class LambdaDied(BaseException):
    """The Lambda runtime ended the invocation (timeout, out of memory): no handler sees it."""


def short_lived_context() -> SimpleNamespace:
    return SimpleNamespace(
        function_name="sluice-test",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:sluice-test",
        aws_request_id="dying-invocation",
        get_remaining_time_in_millis=lambda: REMAINING_MS,
    )


@contextmanager
def dies_after(service: str, operation: str, nth: int = 1, when: Callable[[dict], bool] = lambda _: True) -> Iterator:
    """The n-th `service.operation` call whose parameters match `when` succeeds, then the Lambda dies."""
    client = clients.get(service)
    seen = {"count": 0}

    # before-parameter-build sees the parameters (and runs even when a Stubber answers the call).
    def before(params: dict, context: dict, **_: Any) -> None:
        context["sluice_matches"] = when(params)

    def after(context: dict, **_: Any) -> None:
        if context.get("sluice_matches"):
            seen["count"] += 1
            if seen["count"] == nth:
                raise LambdaDied(f"died after {service}.{operation} #{nth}")

    client.meta.events.register(f"before-parameter-build.{service}.{operation}", before)
    client.meta.events.register(f"after-call.{service}.{operation}", after)
    try:
        yield
    finally:
        client.meta.events.unregister(f"before-parameter-build.{service}.{operation}", before)
        client.meta.events.unregister(f"after-call.{service}.{operation}", after)
    assert seen["count"] >= nth, f"{service}.{operation} #{nth} was never called"


def on_jobs_table(params: dict) -> bool:
    return params.get("TableName") == JOBS_TABLE


def idempotency_records() -> list[dict]:
    return shared_client("dynamodb").scan(TableName=IDEMPOTENCY_TABLE)["Items"]


def crash_then_retry(evt: dict, crash: Any, lambda_context: Any) -> dict:
    """The first attempt dies inside `crash`; once its lock expired, the retry's answer."""
    with crash, pytest.raises(LambdaDied):
        call(evt, short_lived_context())
    [record] = idempotency_records()
    assert record["status"]["S"] == "INPROGRESS"
    # Meanwhile the key is still held: a retry now is told to come back (409), not given a second job.
    assert call(evt, lambda_context)["statusCode"] == 409
    time.sleep(REMAINING_MS / 1000 + 0.2)
    retried = call(evt, lambda_context)
    assert retried["statusCode"] == 202, retried["body"]
    return body_of(retried)


@pytest.fixture
def jobs(aws, catalog_document, monkeypatch):
    stack = create_jobs_stack(monkeypatch, catalog_document)
    stack.put("uploads/acme/scoring-2026-11/part-0001.csv")
    yield stack
    monkeypatch.undo()
    get_settings.cache_clear()


def async_request(key: str = "order-42", model: str = "iris") -> dict:
    evt = for_model(event("async-submit", body=IRIS_ROWS.decode()), model)
    set_header(evt, "Idempotency-Key", key)
    return evt


def test_the_job_id_is_derived_from_caller_route_and_key(jobs, lambda_context):
    job = body_of(call(async_request("order-1"), lambda_context))

    assert job["id"] == job_id_for("acme", "POST /v1/models/iris/async", "order-1")
    # Length-prefixed parts: moving a character from one part to the next gives another id.
    assert job_id_for("acme", "a", "bc") != job_id_for("acme", "ab", "c")
    assert job_id_for("acme", "r", "k") != job_id_for("acmf", "r", "k")


def test_without_a_key_every_request_is_a_new_job(jobs, lambda_context):
    evt = for_model(event("async-submit", body=IRIS_ROWS.decode()), "iris")
    set_header(evt, "Idempotency-Key", None)

    first, second = body_of(call(evt, lambda_context)), body_of(call(evt, lambda_context))

    assert first["id"] != second["id"]
    assert len(jobs.all_jobs()) == 2


STATE_MACHINE_ASYNC_CRASHES = {
    "after the input object is written": lambda: dies_after("s3", "PutObject"),
    "after the job row is written": lambda: dies_after("dynamodb", "PutItem", when=on_jobs_table),
    "after the execution started": lambda: dies_after("stepfunctions", "StartExecution"),
    "after the execution was recorded": lambda: dies_after("dynamodb", "UpdateItem", when=on_jobs_table),
}


@pytest.mark.parametrize("crash", list(STATE_MACHINE_ASYNC_CRASHES))
def test_async_state_machine_job_a_crash_then_a_retry_gives_one_job_one_object_one_execution(
    jobs, lambda_context, crash
):
    evt = async_request()

    job = crash_then_retry(evt, STATE_MACHINE_ASYNC_CRASHES[crash](), lambda_context)

    assert job["id"] == job_id_for("acme", "POST /v1/models/iris/async", "order-42")
    assert len(jobs.all_jobs()) == 1
    assert jobs.keys("async/acme/") == [f"async/acme/{job['id']}/input"]
    (execution,) = jobs.executions(jobs.async_arn)
    assert execution["name"] == job["id"]
    stored = jobs.store.get(job["id"])
    assert stored.status == JobStatus.QUEUED
    assert stored.execution_id == execution["executionArn"]
    [record] = idempotency_records()
    assert record["status"]["S"] == "COMPLETED"


@pytest.fixture
def sagemaker_async(monkeypatch):
    """InvokeEndpointAsync answered by a botocore Stubber (moto has no async endpoints), each call counted;
    the client's own events (the crash hooks) fire as on AWS."""
    from botocore.stub import Stubber

    runtime = shared_client("sagemaker-runtime")
    stub = Stubber(runtime)
    invocations: list[dict] = []

    def count(params: dict, **_: Any) -> None:
        invocations.append(dict(params))

    # Answers for more calls than may happen: the count, not the stub, says how many were made.
    for index in range(3):
        location = f"s3://{DATA_BUCKET}/async/_sagemaker/{index}.out"
        stub.add_response("invoke_endpoint_async", {"InferenceId": "echoed", "OutputLocation": location})
    event_name = "before-parameter-build.sagemaker-runtime.InvokeEndpointAsync"
    runtime.meta.events.register(event_name, count)
    stub.activate()
    real_get = clients.get
    monkeypatch.setattr(
        clients,
        "get",
        lambda service, timeout_seconds=None: (
            runtime if service == "sagemaker-runtime" else real_get(service, timeout_seconds)
        ),
    )
    yield invocations
    stub.deactivate()
    runtime.meta.events.unregister(event_name, count)


NATIVE_CRASHES = {
    "after the input object is written": lambda: dies_after("s3", "PutObject"),
    "after the job row is written": lambda: dies_after("dynamodb", "PutItem", when=on_jobs_table),
    "after SageMaker was asked": lambda: dies_after("sagemaker-runtime", "InvokeEndpointAsync"),
    "after the output location was recorded": lambda: dies_after("dynamodb", "UpdateItem", 2, on_jobs_table),
    "after the job moved to RUNNING": lambda: dies_after("dynamodb", "UpdateItem", 3, on_jobs_table),
}


@pytest.mark.parametrize("crash", list(NATIVE_CRASHES))
def test_native_async_job_a_crash_then_a_retry_gives_one_job_and_one_sagemaker_invocation(
    jobs, lambda_context, sagemaker_async, crash
):
    evt = async_request("order-43", model="churn-async")

    job = crash_then_retry(evt, NATIVE_CRASHES[crash](), lambda_context)

    assert job["id"] == job_id_for("acme", "POST /v1/models/churn-async/async", "order-43")
    assert len(jobs.all_jobs()) == 1
    assert jobs.keys("async/acme/") == [f"async/acme/{job['id']}/input"]
    assert [call["InferenceId"] for call in sagemaker_async] == [job["id"]]
    stored = jobs.store.get(job["id"])
    assert stored.details["invocation_requested_at"]
    if crash == "after SageMaker was asked":
        # Nothing recorded its answer: SageMaker's notification finishes the job (QUEUED -> final).
        assert stored.status == JobStatus.QUEUED
    else:
        assert stored.status == JobStatus.RUNNING
        assert stored.execution_id == job["id"]
    assert jobs.executions(jobs.async_arn) == []


def test_native_async_a_crash_between_claim_and_call_never_invokes_twice(jobs, lambda_context, sagemaker_async):
    """Dying after the claim but before InvokeEndpointAsync: the retry does not invoke (it cannot tell this
    from a death just after the call); the job stays QUEUED without an execution, which the reaper fails."""
    evt = async_request("order-44", model="churn-async")

    job = crash_then_retry(evt, dies_after("dynamodb", "UpdateItem", 1, on_jobs_table), lambda_context)

    assert sagemaker_async == []
    stored = jobs.store.get(job["id"])
    assert stored.status == JobStatus.QUEUED
    assert stored.execution_id is None
    assert len(jobs.all_jobs()) == 1


BATCH_CRASHES = {
    "after the job row is written": lambda: dies_after("dynamodb", "PutItem", when=on_jobs_table),
    "after the execution started": lambda: dies_after("stepfunctions", "StartExecution"),
    "after the execution was recorded": lambda: dies_after("dynamodb", "UpdateItem", when=on_jobs_table),
}


@pytest.mark.parametrize("crash", list(BATCH_CRASHES))
def test_batch_job_a_crash_then_a_retry_gives_one_job_one_execution(jobs, lambda_context, crash):
    evt = event("batch-job-create")
    set_header(evt, "Idempotency-Key", "batch-2026-11")

    job = crash_then_retry(evt, BATCH_CRASHES[crash](), lambda_context)

    assert job["id"] == job_id_for("acme", "POST /v1/batch-jobs", "batch-2026-11")
    assert len(jobs.all_jobs()) == 1
    (execution,) = jobs.executions(jobs.batch_arn)
    assert execution["name"] == job["id"]
    assert jobs.store.get(job["id"]).execution_id == execution["executionArn"]
    assert json.loads(json.dumps(jobs.execution_input(execution["executionArn"])))["job_id"] == job["id"]
