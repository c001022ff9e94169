"""The batch workflow leaves nothing running: a transform stuck InProgress is stopped at the poll limit,
and a cancel at any state of the workflow leaves no transform job InProgress.

statemachines/batch_transform.asl.json runs in moto's interpreter with the real handlers in-process;
tests/workflow_support.TransformScript steers moto's transform jobs and runs a cancel at a chosen
moment (just before CreateTransformJob, just after it, at a status check). The cancel is the API's
(POST /v1/jobs/{id}/cancel), with its StopExecution refused (a fault injected on the API's Step
Functions client): the workflow's own steps must notice the cancel, the harder case (a stop that fails
or races the next step). A cancel whose StopExecution works ends the execution at once, earlier still.
Every job ends final exactly once: one transition into a final state, counted on the real JobStore.

A cancel while the job awaits an operator's approval is
test_jobs_batch_workflow.test_cancel_path_a_job_cancelled_while_awaiting_approval_never_runs.
"""

from __future__ import annotations

import json

import pytest

from sluice.jobs.models import JobStatus
from tests.api_support import event
from tests.conftest import load_handler
from tests.jobs_support import as_caller, for_path_id
from tests.test_jobs_batch_workflow import TO_RUNNING, created_for, submit
from tests.workflow_support import CALLER, TEST_PARAMETERS, jobs_stack, run_execution, states_entered

MAX_POLLS = int(TEST_PARAMETERS["TransformMaxPolls"])


@pytest.fixture(scope="module")
def stack():
    with jobs_stack("sluice-batch-safety", {"version": 1, "models": {}}) as deployed:
        yield deployed


def run(stack, execution_input) -> dict:
    return run_execution(
        stack, "BatchTransformStateMachineArn", execution_input.model_dump(mode="json", exclude_none=True), timeout=60
    )


def cancel_through_api(job_id: str, lambda_context) -> None:
    from botocore.exceptions import ClientError

    from sluice import clients

    def refuse(**_):
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "StopExecution")

    stepfunctions = clients.get("stepfunctions")
    stepfunctions.meta.events.register("before-call.sfn.StopExecution", refuse)
    evt = for_path_id(as_caller(event("job-cancel"), CALLER), "job_id", job_id)
    try:
        response = load_handler("api").lambda_handler(evt, lambda_context)
    finally:
        stepfunctions.meta.events.unregister("before-call.sfn.StopExecution", refuse)
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["status"] == "CANCELLED"


def assert_nothing_running(stack, job_id: str) -> None:
    for created in created_for(stack, job_id):
        assert stack.transforms.status_of(created["TransformJobName"]) != "InProgress", created["TransformJobName"]


def test_a_transform_stuck_in_progress_is_stopped_at_the_poll_limit_and_the_job_fails_saying_so(stack, final_moves):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    name = f"{job_id}-1"
    stack.transforms.statuses[name] = [("InProgress", "")]

    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    path = states_entered(stack, execution["executionArn"])
    assert path.count("Describe transform job") == MAX_POLLS
    # The wait doubles from TransformPollSeconds (1) and is capped at TransformPollMaxSeconds (2).
    assert path.count("Cap the wait") == MAX_POLLS - 2
    limit = path.index("Transform job ran too long")
    assert path[limit - 2 : limit + 4] == [
        "Count status check",
        "Poll limit reached?",
        "Transform job ran too long",
        "Stop transform job",
        "Mark job failed",
        "Job finished",
    ]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith(
        f"Transform job {name} was still InProgress after {MAX_POLLS} status checks (about 5 s); it was stopped."
    )
    assert job.details["failure_type"] == "TransformJobTooLong"
    assert stack.transforms.stopped.count(name) == 1
    assert stack.transforms.status_of(name) == "Stopped"
    assert final_moves[job_id] == 1


def test_cancel_before_the_workflow_starts_nothing_is_created(stack, lambda_context, final_moves):
    execution_input = submit(stack)
    cancel_through_api(execution_input.job_id, lambda_context)

    execution = run(stack, execution_input)

    assert states_entered(stack, execution["executionArn"])[-3:] == [
        "Mark job running",
        "Job still wanted?",
        "Job already final",
    ]
    assert created_for(stack, execution_input.job_id) == []
    assert stack.store().get(execution_input.job_id).status == JobStatus.CANCELLED
    assert final_moves[execution_input.job_id] == 1


def test_cancel_after_the_name_is_recorded_but_before_the_create_the_start_step_stops_it(
    stack, lambda_context, final_moves
):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    name = f"{job_id}-1"
    stack.transforms.statuses[name] = [("InProgress", "")]
    # The cancel finds the name recorded but no transform job yet: it has nothing to stop.
    stack.transforms.before_create[name] = lambda: cancel_through_api(job_id, lambda_context)

    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path == [*TO_RUNNING, "Start transform job", "Transform job still wanted?", "Job already final"]
    assert [job["TransformJobName"] for job in created_for(stack, job_id)] == [name]
    assert stack.transforms.stopped.count(name) == 1  # by the start step: the cancel found nothing yet
    assert stack.transforms.status_of(name) == "Stopped"
    job = stack.store().get(job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.details["transform_job_name"] == name
    assert final_moves[job_id] == 1
    assert_nothing_running(stack, job_id)


def test_cancel_just_after_the_create_the_cancel_stops_it(stack, lambda_context, final_moves):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    name = f"{job_id}-1"
    stack.transforms.statuses[name] = [("InProgress", "")]
    stack.transforms.after_create[name] = lambda: cancel_through_api(job_id, lambda_context)

    execution = run(stack, execution_input)

    assert states_entered(stack, execution["executionArn"])[-2:] == ["Transform job still wanted?", "Job already final"]
    assert stack.transforms.stopped.count(name) == 1  # by the cancel; the start step found it ended
    assert stack.transforms.status_of(name) == "Stopped"
    assert stack.store().get(job_id).status == JobStatus.CANCELLED
    assert final_moves[job_id] == 1


def test_cancel_while_polling_the_transform_job_is_stopped_and_the_job_stays_cancelled(
    stack, lambda_context, final_moves
):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    name = f"{job_id}-1"
    stack.transforms.statuses[name] = [("InProgress", "")]
    stack.transforms.on_describe[name] = lambda: cancel_through_api(job_id, lambda_context)

    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    # The cancel came during a status check, which sees the transform Stopped; the job is CANCELLED
    # already, so "Mark job cancelled" is refused by the store, not repeated.
    assert path[path.index("Mark job cancelled") - 1 :][:2] == ["Transform job status?", "Mark job cancelled"]
    assert path.count("Describe transform job") == 1
    assert stack.transforms.stopped.count(name) == 1
    assert stack.store().get(job_id).status == JobStatus.CANCELLED
    assert final_moves[job_id] == 1
    assert_nothing_running(stack, job_id)


def test_cancel_during_the_wait_before_a_retry_no_next_attempt_is_created(stack, lambda_context, final_moves):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    first = f"{job_id}-1"
    stack.transforms.statuses[first] = [("Failed", "CapacityError: Insufficient capacity for ml.m5.large")]
    stack.transforms.on_describe[first] = lambda: cancel_through_api(job_id, lambda_context)

    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert "Wait before next attempt" in path
    assert path[-3:] == ["Start transform job", "Transform job still wanted?", "Job already final"]
    # The second attempt's start found the job CANCELLED and created nothing.
    assert [job["TransformJobName"] for job in created_for(stack, job_id)] == [first]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.details["transform_job_name"] == first
    assert final_moves[job_id] == 1
    assert_nothing_running(stack, job_id)
