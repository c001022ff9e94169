"""statemachines/async_inference.asl.json run by moto's interpreter, with the real handlers in-process.

template.yaml is deployed into an in-process moto server (tests/workflow_support.py); the model is a
scripted SageMaker runtime on loopback, so each Lambda invocation of "Run inference" is one call there.
"""

from __future__ import annotations

import json
import time

import pytest

from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.storage.keys import async_input_key, async_output_key, s3_uri
from tests.workflow_support import CALLER, jobs_stack, new_job_id, run_execution, states_entered

CATALOG = {
    "version": 1,
    "models": {
        "scorer": {
            "description": "A scorer on a real-time SageMaker endpoint (scripted in the tests)",
            "task": "predict",
            "backend": {"provider": "sagemaker", "endpoint_name": "sluice-scorer"},
            "limits": {"max_payload_bytes": 2048},
            "pricing": {"instance_hourly_usd": 0.23},
            "allowed_callers": [CALLER],
        }
    },
}
HAPPY_PATH = [
    "Mark job running",
    "Job still wanted?",
    "Run inference",
    "Mark job succeeded",
    "Job finished",
]


@pytest.fixture(scope="module")
def stack():
    with jobs_stack("sluice-async-flow", CATALOG) as deployed:
        yield deployed


def submit(stack, script: list[str], *, status: JobStatus = JobStatus.QUEUED, body: bytes | None = None):
    """What job submission does: the job record, the input object, then the execution input."""
    job_id = new_job_id()
    input_key, output_key = async_input_key(CALLER, job_id), async_output_key(CALLER, job_id)
    payload = body if body is not None else json.dumps({"key": job_id, "script": script, "instances": [[1, 2], [3, 4]]})
    if payload:
        stack.client("s3").put_object(Bucket=stack.bucket, Key=input_key, Body=payload)
    stack.store().create(
        Job(
            job_id=job_id,
            caller=CALLER,
            kind=JobKind.ASYNC,
            model="scorer",
            status=status,
            input_location=s3_uri(stack.bucket, input_key),
        )
    )
    return AsyncExecutionInput(
        job_id=job_id,
        caller=CALLER,
        model="scorer",
        input_bucket=stack.bucket,
        input_key=input_key,
        output_bucket=stack.bucket,
        output_key=output_key,
        content_type="application/json",
    )


def run(stack, execution_input: AsyncExecutionInput) -> dict:
    return run_execution(stack, "AsyncInferenceStateMachineArn", execution_input.model_dump(mode="json"))


def test_happy_path_job_succeeds_with_the_output_next_to_its_input_and_is_announced(stack):
    execution_input = submit(stack, ["ok"])
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == HAPPY_PATH
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.execution_id == execution["executionArn"]
    assert job.started_at
    assert job.finished_at
    output_key = async_output_key(CALLER, job.job_id)
    assert output_key.rsplit("/", 1)[0] == execution_input.input_key.rsplit("/", 1)[0]  # next to the input
    assert job.output_location == s3_uri(stack.bucket, output_key)
    output = stack.client("s3").get_object(Bucket=stack.bucket, Key=output_key)
    assert json.loads(output["Body"].read()) == {"predictions": [3, 7]}
    assert output["ContentType"] == "application/json"
    assert job.details["provider"] == "sagemaker"
    assert job.details["variant"] == "v1"
    assert job.details["estimated_cost_usd"] >= 0
    assert stack.runtime.calls[job.job_id] == 1

    [event] = stack.job_events(job.job_id, wait=2)
    assert event["type"] == "sluice.job.finished"
    assert event["job"]["status"] == "SUCCEEDED"
    assert event["job"]["output_location"] == job.output_location


def test_retry_path_transient_errors_are_retried_until_the_model_answers(stack):
    execution_input = submit(stack, ["throttle", "unavailable", "ok"])
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == HAPPY_PATH
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    # Throttled, then BackendUnavailable, each retried by the state machine: three invocations.
    assert stack.runtime.calls[job.job_id] == 3


def test_catch_path_a_model_4xx_fails_the_job_at_once_as_model_rejected_input_without_retry(stack):
    execution_input = submit(stack, ["model_error", "ok"])
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"  # the workflow handled it: the job failed, not the execution
    path = states_entered(stack, execution["executionArn"])
    assert path == [
        "Mark job running",
        "Job still wanted?",
        "Run inference",
        "Mark job failed",
        "Job finished",
    ]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert stack.runtime.calls[job.job_id] == 1  # the caller must fix the input: retrying cannot help
    assert "input has 3 features, expected 4" in job.failure_reason
    assert "Traceback" not in job.failure_reason
    assert "stackTrace" not in job.failure_reason
    assert job.details["failure_type"] == "ModelRejectedInput"
    assert job.output_location is None
    [event] = stack.job_events(job.job_id, wait=2)
    assert event["job"]["status"] == "FAILED"
    assert event["job"]["failure_reason"] == job.failure_reason


def test_catch_path_a_missing_input_object_fails_the_job_without_calling_the_model(stack):
    execution_input = submit(stack, [], body=b"")
    execution = run(stack, execution_input)

    job = stack.store().get(execution_input.job_id)
    assert execution["status"] == "SUCCEEDED"
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "InvalidRequest"
    assert "does not exist" in job.failure_reason
    assert stack.runtime.calls[job.job_id] == 0


def test_retry_path_exhausted_retries_fail_the_job_with_the_backend_error(stack):
    execution_input = submit(stack, ["unavailable"])
    execution = run(stack, execution_input)

    job = stack.store().get(execution_input.job_id)
    assert execution["status"] == "SUCCEEDED"
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "BackendUnavailable"
    assert "ServiceUnavailable" in job.failure_reason
    # The first call and InferenceRetryMaxAttempts (2) retries.
    assert stack.runtime.calls[job.job_id] == 3


def test_cancel_path_a_job_cancelled_during_inference_stays_cancelled_and_only_its_cancel_is_announced(stack):
    job_id_holder = {}

    execution_input = submit(stack, ["cancel-placeholder"])
    job_id_holder["id"] = execution_input.job_id
    # The model call itself cancels the job (as DELETE /v1/jobs/{id} would, meanwhile).
    body = json.dumps({"key": execution_input.job_id, "script": [f"cancel:{execution_input.job_id}"], "instances": []})
    stack.client("s3").put_object(Bucket=stack.bucket, Key=execution_input.input_key, Body=body)
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == [
        "Mark job running",
        "Job still wanted?",
        "Run inference",
        "Mark job succeeded",  # applied: false, the job stays CANCELLED
        "Job finished",
    ]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.output_location is None
    # The cancel is announced (by the announcer, when it happened); the late success is not.
    [event] = stack.job_events(job.job_id, wait=3)
    assert event["job"]["status"] == "CANCELLED"
    time.sleep(0.5)
    assert len(stack.job_events(job.job_id)) == 1


def test_cancel_path_a_job_cancelled_before_it_started_is_not_run(stack):
    execution_input = submit(stack, ["ok"], status=JobStatus.CANCELLED)
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == [
        "Mark job running",
        "Job still wanted?",
        "Job already final",
    ]
    assert stack.store().get(execution_input.job_id).status == JobStatus.CANCELLED
    assert stack.runtime.calls[execution_input.job_id] == 0
    [event] = stack.job_events(execution_input.job_id, wait=3)  # created CANCELLED: announced once
    assert event["job"]["status"] == "CANCELLED"
