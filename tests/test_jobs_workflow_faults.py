"""Fault injection per Task of each state machine: whatever fails once, the job ends in a final state,
and it gets there exactly once (one transition into a final state that the jobs table accepted).

Both state machines run in moto's interpreter with the real handlers in-process (tests/workflow_support).
Faults, each injected once into one Task (chosen by its function and its request):
- "dynamodb throttling" / "kms throttling": the jobs table refuses the function's first write
  (ProvisionedThroughputExceededException; ThrottlingException as DynamoDB reports a throttled table key);
- "timeout": the function does its work and then Lambda times it out (Sandbox.Timedout, the error Step
  Functions reports for a function's own timeout, which comes before the task's TimeoutSeconds; moto
  refuses function errors named States.*), so the step's effect happened but the workflow did not hear
  of it: the retry or the Catch must cope;
- SageMaker throttling of CreateTransformJob and DescribeTransformJob (TransformScript).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sluice import clients
from sluice_local import streams
from sluice_local.lambdas import InvokeResult
from tests.test_jobs_async_workflow import CATALOG
from tests.test_jobs_async_workflow import submit as submit_async
from tests.test_jobs_batch_workflow import created_for
from tests.test_jobs_batch_workflow import submit as submit_batch
from tests.workflow_support import jobs_stack, run_execution


@pytest.fixture(scope="module")
def stack():
    with jobs_stack("sluice-faults", CATALOG) as deployed:
        yield deployed


def throttled_table(code: str, message: str) -> Callable[[], ClientError]:
    def error() -> ClientError:
        dynamodb = clients.get("dynamodb")
        kind = getattr(dynamodb.exceptions, code, ClientError)
        return kind({"Error": {"Code": code, "Message": message}}, "UpdateItem")

    return error


FAULTS: dict[str, Any] = {
    "dynamodb throttling": throttled_table("ProvisionedThroughputExceededException", "Throughput exceeds the table's"),
    "kms throttling": throttled_table("ThrottlingException", "KMS throttled the table's key (rate exceeded)"),
    "timeout": "timeout",
}


@pytest.fixture
def inject(stack, monkeypatch):
    """inject(function suffix, matches(event), fault): the first matching invocation fails that way."""
    pending: list[tuple[str, Callable[[dict], bool], Any]] = []
    fired: list[str] = []
    real = stack.runner.invoke_result

    def invoke_result(name: str, event: Any) -> InvokeResult:
        for index, (suffix, matches, fault) in enumerate(pending):
            if name.endswith(suffix) and isinstance(event, dict) and matches(event):
                pending.pop(index)
                fired.append(name)
                if fault == "timeout":
                    real(name, event)  # the work is done; the answer is lost
                    return InvokeResult(
                        {
                            "errorType": "Sandbox.Timedout",
                            "errorMessage": "RequestId: x Error: Task timed out after 30.00 seconds",
                        },
                        "Unhandled",
                    )
                return _with_dynamodb_failing(real, name, event, fault)
        return real(name, event)

    monkeypatch.setattr(stack.runner, "invoke_result", invoke_result)

    def add(suffix: str, matches: Callable[[dict], bool], fault: Any) -> None:
        pending.append((suffix, matches, fault))

    add.fired = fired  # type: ignore[attr-defined]
    return add


def _with_dynamodb_failing(real: Any, name: str, event: Any, fault: Callable[[], ClientError]) -> InvokeResult:
    dynamodb = clients.get("dynamodb")
    state = {"left": 1}

    def refuse(**_: Any) -> None:
        if state["left"]:
            state["left"] -= 1
            raise fault()

    dynamodb.meta.events.register("before-call.dynamodb.UpdateItem", refuse)
    try:
        return real(name, event)
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.UpdateItem", refuse)


def status_is(status: str) -> Callable[[dict], bool]:
    return lambda event: event.get("status") == status


BATCH_TASKS = {
    "Check instance approval": ("-batch-policy", lambda event: event.get("decision") == "instance_approval"),
    "Mark job running": ("-job-status", status_is("RUNNING")),
    "Start transform job": ("-transform-start", lambda event: True),
    "Record output": ("-job-status", status_is("SUCCEEDED")),
}
BATCH_FAILURE_TASKS = {
    "Classify failure": ("-batch-policy", lambda event: event.get("decision") == "transform_failure"),
    "Mark job failed": ("-job-status", status_is("FAILED")),
}
ASYNC_TASKS = {
    "Mark job running": ("-job-status", status_is("RUNNING")),
    "Run inference": ("-async-worker", lambda event: True),
    "Mark job succeeded": ("-job-status", status_is("SUCCEEDED")),
}


def store_faults(tasks: dict[str, tuple]) -> list[tuple[str, str]]:
    """Every fault for the tasks of the status function; timeouts for every task."""
    cases = []
    for task, (suffix, _) in tasks.items():
        for fault in FAULTS:
            if fault == "timeout" or suffix == "-job-status":
                cases.append((task, fault))
    return cases


def assert_final_once(stack, final_moves, job_id: str, execution: dict) -> None:
    job = stack.store().get(job_id)
    assert job.status.terminal, (job.status, execution)
    assert final_moves[job_id] == 1, final_moves
    for created in created_for(stack, job_id):
        assert stack.transforms.status_of(created["TransformJobName"]) != "InProgress"
    assert_announced_once(stack, job_id)


def assert_announced_once(stack, job_id: str) -> None:
    """The announcer (the jobs table's stream, delivered in the background) published it exactly once."""
    assert stack.job_events(job_id, wait=15), "the job was never announced"
    streams.wait_until_idle()
    time.sleep(0.3)
    events = stack.job_events(job_id)
    assert len(events) == 1, events
    assert events[0]["job"]["status"] == stack.store().get(job_id).status.value


def run_batch(stack, execution_input) -> dict:
    return run_execution(
        stack, "BatchTransformStateMachineArn", execution_input.model_dump(mode="json", exclude_none=True), timeout=60
    )


@pytest.mark.parametrize(("task", "fault"), store_faults(BATCH_TASKS))
def test_batch_a_fault_in_any_task_still_ends_the_job_once(stack, inject, final_moves, task, fault):
    suffix, matches = BATCH_TASKS[task]
    inject(suffix, matches, FAULTS[fault])
    execution_input = submit_batch(stack)

    execution = run_batch(stack, execution_input)

    assert inject.fired, "the fault was not injected"
    assert_final_once(stack, final_moves, execution_input.job_id, execution)
    # At most one transform job per attempt, whatever was retried.
    names = [job["TransformJobName"] for job in created_for(stack, execution_input.job_id)]
    assert len(names) == len(set(names))


def test_batch_a_timed_out_start_is_retried_and_follows_the_transform_job_it_created(stack, inject, final_moves):
    inject("-transform-start", lambda event: True, "timeout")
    execution_input = submit_batch(stack)

    execution = run_batch(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    job = stack.store().get(execution_input.job_id)
    assert job.status.value == "SUCCEEDED"
    # The retried start met ResourceInUse and followed the first one's transform job.
    assert [created["TransformJobName"] for created in created_for(stack, job.job_id)] == [f"{job.job_id}-1"]
    assert final_moves[job.job_id] == 1


@pytest.mark.parametrize(("task", "fault"), store_faults(BATCH_FAILURE_TASKS))
def test_batch_a_fault_on_the_failure_path_still_ends_the_job_once(stack, inject, final_moves, task, fault):
    suffix, matches = BATCH_FAILURE_TASKS[task]
    inject(suffix, matches, FAULTS[fault])
    execution_input = submit_batch(stack)
    stack.transforms.statuses[f"{execution_input.job_id}-1"] = [("Failed", "ClientError: bad input row 7")]

    execution = run_batch(stack, execution_input)

    assert inject.fired
    assert_final_once(stack, final_moves, execution_input.job_id, execution)
    assert stack.store().get(execution_input.job_id).status.value == "FAILED"


@pytest.mark.parametrize("call", ["create", "describe"])
def test_batch_sagemaker_throttling_is_retried_and_the_job_ends_once(stack, final_moves, call):
    execution_input = submit_batch(stack)
    name = f"{execution_input.job_id}-1"
    throttle = [("ThrottlingException", "Rate exceeded")]
    if call == "create":
        stack.transforms.create_errors[name] = throttle
    else:
        stack.transforms.describe_errors[name] = throttle

    execution = run_batch(stack, execution_input)

    assert_final_once(stack, final_moves, execution_input.job_id, execution)
    assert stack.store().get(execution_input.job_id).status.value == "SUCCEEDED"


@pytest.mark.parametrize(("task", "fault"), store_faults(ASYNC_TASKS))
def test_async_a_fault_in_any_task_still_ends_the_job_once(stack, inject, final_moves, task, fault):
    suffix, matches = ASYNC_TASKS[task]
    inject(suffix, matches, FAULTS[fault])
    execution_input = submit_async(stack, ["ok"])

    execution = run_execution(stack, "AsyncInferenceStateMachineArn", execution_input.model_dump(mode="json"))

    assert inject.fired
    assert_final_once(stack, final_moves, execution_input.job_id, execution)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_async_a_fault_while_recording_the_failure_still_ends_the_job_once(stack, inject, final_moves, fault):
    inject("-job-status", status_is("FAILED"), FAULTS[fault])
    execution_input = submit_async(stack, ["invalid"])

    execution = run_execution(stack, "AsyncInferenceStateMachineArn", execution_input.model_dump(mode="json"))

    assert inject.fired
    assert_final_once(stack, final_moves, execution_input.job_id, execution)
    assert stack.store().get(execution_input.job_id).status.value == "FAILED"


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_announcer_failing_once_still_announces_the_job_once(stack, inject, final_moves, fault):
    # Its first write (the announcement's claim) throttled, or its answer lost after it announced:
    # the stream's mapping delivers the record again, and the job is announced once.
    inject("-job-announcer", lambda event: bool(event.get("Records")), FAULTS[fault])
    execution_input = submit_async(stack, ["ok"])

    execution = run_execution(stack, "AsyncInferenceStateMachineArn", execution_input.model_dump(mode="json"))

    assert_final_once(stack, final_moves, execution_input.job_id, execution)
    assert inject.fired
