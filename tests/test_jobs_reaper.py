"""The reaper (sluice.jobs.reaper, functions/job_reaper): each stuck shape reconciled from the execution or
SageMaker, live jobs left alone, a concurrent finish never overwritten, and the run bounded.

Ended executions are real: tiny state machines run by moto's ASL interpreter fail, time out, succeed,
or wait until stopped (ABORTED). Transform jobs are moto's, their status set where SageMaker would set
it (moto marks every transform Completed at once and has no StopTransformJob; the test adds it).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from sluice import clients
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.jobs.reaper import ReaperIncomplete, reap_stuck_jobs, run_reaper
from sluice.settings import get_settings
from tests.conftest import load_event, load_handler, shared_client
from tests.jobs_support import ACCOUNT, DATA_BUCKET, REGION, calls_recorded

ROLE = f"arn:aws:iam::{ACCOUNT}:role/sluice-test-sfn"
HOUR = timedelta(hours=1)
# A Lambda task's error as Step Functions records it: the function's JSON error shape, stack trace included.
LAMBDA_CAUSE = json.dumps({"errorType": "MemoryError", "errorMessage": "out of memory", "stackTrace": ["app.py:3"]})
MACHINES = {
    "fails": {
        "StartAt": "Boom",
        "States": {"Boom": {"Type": "Fail", "Error": "Lambda.Unknown", "Cause": LAMBDA_CAUSE}},
    },
    "times-out": {
        "TimeoutSeconds": 1,
        "StartAt": "Wait",
        "States": {"Wait": {"Type": "Wait", "Seconds": 3, "End": True}},
    },
    "succeeds": {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}},
    "waits": {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 60, "End": True}}},
}
_counter = iter(range(10**6))


class World:
    """The jobs stack with executions that really end, and moto's transform jobs."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs
        self.store = jobs.store
        self.sfn = shared_client("stepfunctions")
        self.machines = {
            name: self.sfn.create_state_machine(name=f"sluice-test-{name}", definition=json.dumps(d), roleArn=ROLE)[
                "stateMachineArn"
            ]
            for name, d in MACHINES.items()
        }
        self.running: list[str] = []

    def execution(self, outcome: str) -> str:
        """An execution ARN that ended FAILED, TIMED_OUT, SUCCEEDED or ABORTED, or is RUNNING, or "missing"."""
        if outcome == "missing":
            return self.machines["succeeds"].replace(":stateMachine:", ":execution:") + ":never-started"
        machine = {"FAILED": "fails", "TIMED_OUT": "times-out", "SUCCEEDED": "succeeds"}.get(outcome, "waits")
        arn = self.sfn.start_execution(stateMachineArn=self.machines[machine], name=f"run-{next(_counter)}")[
            "executionArn"
        ]
        if outcome == "ABORTED":
            self.sfn.stop_execution(executionArn=arn, error="Manual", cause="stopped in the console")
        if outcome == "RUNNING":
            self.running.append(arn)
            return arn
        deadline = time.monotonic() + 10
        while self.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
            assert time.monotonic() < deadline, arn
            time.sleep(0.1)
        assert self.sfn.describe_execution(executionArn=arn)["status"] == outcome
        return arn

    def transform(self, name: str, status: str, reason: str = "") -> str:
        output = f"s3://{DATA_BUCKET}/batch-output/acme/{name}/"
        shared_client("sagemaker").create_transform_job(
            TransformJobName=name,
            ModelName="churn-v3",
            TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://in/x/"}}},
            TransformOutput={"S3OutputPath": output},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        )
        job = sagemaker_backend().transform_jobs[name]
        job.transform_job_status, job.failure_reason = status, reason
        return output

    def job(self, *, kind: JobKind = JobKind.BATCH, status: JobStatus, idle: timedelta, **fields: Any) -> Job:
        job_id = f"job-{next(_counter):032x}"
        when = (datetime.now(UTC) - idle).isoformat(timespec="milliseconds")
        job = Job(
            job_id=job_id,
            caller="acme",
            kind=kind,
            model="churn-batch" if kind == JobKind.BATCH else "churn-async",
            status=status,
            input_location=f"s3://{DATA_BUCKET}/uploads/acme/scoring/",
            created_at=when,
            updated_at=when,
            started_at=when if status == JobStatus.RUNNING else None,
            **fields,
        )
        return self.store.create(job)

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None
        return job


def sagemaker_backend() -> Any:
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION]


@pytest.fixture
def world(jobs, monkeypatch):
    from moto.core.config import default_user_config
    from moto.sagemaker import models as sagemaker_models
    from moto.sagemaker import responses as sagemaker_responses

    # moto's ASL interpreter, so the tiny state machines really end.
    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": True})
    stopped: list[str] = []

    def stop_transform_job(backend: Any, transform_job_name: str) -> None:
        job = backend.transform_jobs[transform_job_name]
        if job.transform_job_status != "InProgress":
            from moto.sagemaker.exceptions import ValidationError

            raise ValidationError(message=f"Transform job {transform_job_name} is {job.transform_job_status}.")
        job.transform_job_status = "Stopping"
        stopped.append(transform_job_name)

    def stop_transform_job_action(response: Any) -> Any:
        from moto.core.responses import EmptyResult

        response.sagemaker_backend.stop_transform_job(response._get_param("TransformJobName"))
        return EmptyResult()

    monkeypatch.setattr(sagemaker_models.SageMakerModelBackend, "stop_transform_job", stop_transform_job, raising=False)
    monkeypatch.setattr(
        sagemaker_responses.SageMakerResponse, "stop_transform_job", stop_transform_job_action, raising=False
    )
    built = World(jobs)
    built.stopped = stopped
    yield built
    for arn in built.running:
        built.sfn.stop_execution(executionArn=arn)


# --- QUEUED that never started -----------------------------------------------------------------------


def test_a_job_queued_without_an_execution_past_the_limit_fails_saying_it_never_started(world):
    job = world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=HOUR)

    report = reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.FAILED
    assert "never started" in reaped.failure_reason
    assert "QUEUED for 60 minutes" in reaped.failure_reason
    assert reaped.details["reaped"]["by"] == "reaper"
    assert reaped.details["reaped"]["from_status"] == "QUEUED"
    assert [(j.job_id, j.outcome, j.to_status) for j in report.jobs] == [(job.job_id, "failed", JobStatus.FAILED)]


def test_jobs_within_their_limit_are_not_even_looked_at(world):
    queued = world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=timedelta(minutes=5))
    # Past the async RUNNING limit (30 min) but not the batch one (60 min).
    running = world.job(status=JobStatus.RUNNING, idle=timedelta(minutes=45), execution_id=world.execution("FAILED"))

    with calls_recorded({"sfn": clients.get("stepfunctions"), "sagemaker": clients.get("sagemaker")}) as made:
        report = reap_stuck_jobs(world.store, max_jobs=10)

    assert report.examined == 0
    assert made == []
    assert world.get(queued.job_id).status == JobStatus.QUEUED
    assert world.get(running.job_id).status == JobStatus.RUNNING


# --- batch: the execution ended, the transform job decides -------------------------------------------


@pytest.mark.parametrize(
    ("execution", "transform", "expected"),
    [
        ("FAILED", "Completed", JobStatus.SUCCEEDED),
        ("TIMED_OUT", "Failed", JobStatus.FAILED),
        ("ABORTED", "Stopped", JobStatus.CANCELLED),
        ("FAILED", "InProgress", JobStatus.FAILED),
    ],
)
def test_a_running_batch_job_whose_execution_ended_takes_its_transform_jobs_outcome(
    world, execution, transform, expected
):
    name = f"job-tj-{next(_counter)}-1"
    output = world.transform(name, transform, reason="ClientError: input has 3 features, expected 4")
    job = world.job(
        status=JobStatus.RUNNING,
        idle=2 * HOUR,
        execution_id=world.execution(execution),
        details={"transform_job_name": name},
        output_location=None,
    )

    report = reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == expected
    (line,) = report.jobs
    assert line.outcome == "reconciled"
    assert f"its workflow execution ended {execution}" in line.found
    assert f"transform job {name} {transform}" in line.found
    if transform == "Completed":
        assert reaped.output_location == output
    if transform == "Failed":
        assert reaped.failure_reason == "ClientError: input has 3 features, expected 4"
    if transform == "InProgress":
        # Nothing would ever look at it again: stopped, not left billing.
        assert world.stopped == [name]
        assert reaped.details["reaped"]["actions"] == {"transform_job": "stopped"}
        assert f"transform job {name} was still running" in reaped.failure_reason
    else:
        assert world.stopped == []


def test_a_batch_job_awaiting_approval_whose_transform_completed_succeeds_through_running(world):
    name = f"job-tj-{next(_counter)}-1"
    world.transform(name, "Completed")
    job = world.job(
        status=JobStatus.AWAITING_APPROVAL,
        idle=26 * HOUR,
        execution_id=world.execution("FAILED"),
        details={"transform_job_name": name},
    )

    reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.SUCCEEDED
    assert reaped.started_at is not None


def test_a_batch_job_whose_execution_does_not_exist_and_recorded_no_transform_fails_saying_so(world):
    job = world.job(status=JobStatus.RUNNING, idle=2 * HOUR, execution_id=world.execution("missing"))

    report = reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.FAILED
    assert "its workflow execution does not exist" in reaped.failure_reason
    assert report.jobs[0].outcome == "failed"


def test_a_recorded_transform_job_sagemaker_does_not_know_fails_the_job(world):
    job = world.job(
        status=JobStatus.RUNNING,
        idle=2 * HOUR,
        execution_id=world.execution("SUCCEEDED"),
        details={"transform_job_name": "job-never-created-1"},
    )

    reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.FAILED
    assert "job-never-created-1 does not exist" in reaped.failure_reason


def test_a_stopping_transform_is_left_for_the_next_run(world):
    name = f"job-tj-{next(_counter)}-1"
    world.transform(name, "Stopping")
    job = world.job(
        status=JobStatus.RUNNING,
        idle=2 * HOUR,
        execution_id=world.execution("ABORTED"),
        details={"transform_job_name": name},
    )

    report = reap_stuck_jobs(world.store, max_jobs=10)

    assert world.get(job.job_id).status == JobStatus.RUNNING
    assert report.jobs[0].outcome == "left"


# --- async on the state machine: nothing but the execution to go by ----------------------------------


def test_an_async_job_whose_execution_failed_fails_with_the_executions_error(world):
    job = world.job(
        kind=JobKind.ASYNC,
        status=JobStatus.RUNNING,
        idle=HOUR,
        execution_id=world.execution("FAILED"),
        details={"runner": "state-machine"},
    )

    reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.FAILED
    assert "its workflow execution ended FAILED (Lambda.Unknown: out of memory)" in reaped.failure_reason
    assert "stackTrace" not in reaped.failure_reason


# --- async on a SageMaker async endpoint: S3 decides -------------------------------------------------


def native_job(world: World, *, idle: timedelta = HOUR, status: JobStatus = JobStatus.RUNNING) -> Job:
    job_id = f"job-{next(_counter):032x}"
    return world.job(
        kind=JobKind.ASYNC,
        status=status,
        idle=idle,
        execution_id=job_id,
        output_location=f"s3://{DATA_BUCKET}/async-endpoint-output/{job_id}.out",
        details={
            "runner": "sagemaker-async",
            "endpoint_name": "sluice-churn-async",
            "failure_location": f"s3://{DATA_BUCKET}/async-endpoint-output/failures/{job_id}-error.out",
        },
    )


def test_a_native_async_job_whose_output_exists_succeeds(world):
    job = native_job(world)
    world.jobs.put(job.output_location.split(f"{DATA_BUCKET}/", 1)[1], b'{"predictions": [1]}')

    with calls_recorded({"sfn": clients.get("stepfunctions")}) as made:
        report = reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.SUCCEEDED
    assert reaped.output_location == job.output_location
    assert report.jobs[0].outcome == "reconciled"
    # Its execution_id is the InferenceId: there is no execution to describe.
    assert made == []


def test_a_native_async_job_whose_failure_object_exists_fails_with_its_content(world):
    job = native_job(world)
    key = job.details["failure_location"].split(f"{DATA_BUCKET}/", 1)[1]
    world.jobs.put(key, b"Received server error (500) from primary: model crashed\n")

    reap_stuck_jobs(world.store, max_jobs=10)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.FAILED
    assert reaped.failure_reason == "Received server error (500) from primary: model crashed"


def test_a_native_async_job_with_nothing_in_s3_waits_then_fails_after_the_longer_limit(world, monkeypatch):
    waiting = native_job(world, idle=HOUR)
    given_up = native_job(world, idle=9 * HOUR)

    report = reap_stuck_jobs(world.store, max_jobs=10)

    assert world.get(waiting.job_id).status == JobStatus.RUNNING
    failed = world.get(given_up.job_id)
    assert failed.status == JobStatus.FAILED
    assert "neither an output nor a failure" in failed.failure_reason
    assert "480 minutes" in failed.failure_reason
    assert {j.job_id: j.outcome for j in report.jobs} == {waiting.job_id: "left", given_up.job_id: "reconciled"}


def test_a_native_async_job_left_queued_after_invoking_its_endpoint_is_reconciled_from_s3(world):
    """InvokeEndpointAsync answered and the id was recorded, then the submission died before RUNNING."""
    job = native_job(world, status=JobStatus.QUEUED)
    world.jobs.put(job.output_location.split(f"{DATA_BUCKET}/", 1)[1], b"{}")

    reap_stuck_jobs(world.store, max_jobs=10)

    assert world.get(job.job_id).status == JobStatus.SUCCEEDED


# --- live jobs and concurrent finishes ---------------------------------------------------------------


def test_a_job_whose_execution_is_still_running_is_left_alone_past_its_limit(world):
    job = world.job(status=JobStatus.RUNNING, idle=3 * HOUR, execution_id=world.execution("RUNNING"))

    report = reap_stuck_jobs(world.store, max_jobs=10)

    assert world.get(job.job_id) == job
    assert report.jobs[0].outcome == "left"
    assert report.jobs[0].found == "its workflow execution is RUNNING"


def test_a_job_finished_by_its_workflow_meanwhile_is_not_overwritten(world):
    name = f"job-tj-{next(_counter)}-1"
    world.transform(name, "InProgress")
    job = world.job(
        status=JobStatus.RUNNING,
        idle=2 * HOUR,
        execution_id=world.execution("FAILED"),
        details={"transform_job_name": name},
    )
    output = f"s3://{DATA_BUCKET}/batch-output/acme/{job.job_id}/"

    def workflow_finishes_first(**_: Any) -> None:
        # Between the reaper's read and its transition, the job's own workflow records success.
        world.store.transition(job.job_id, JobStatus.SUCCEEDED, output_location=output)

    sagemaker = clients.get("sagemaker")
    sagemaker.meta.events.register("before-call.sagemaker.DescribeTransformJob", workflow_finishes_first)
    try:
        report = reap_stuck_jobs(world.store, max_jobs=10)
    finally:
        sagemaker.meta.events.unregister("before-call.sagemaker.DescribeTransformJob", workflow_finishes_first)

    reaped = world.get(job.job_id)
    assert reaped.status == JobStatus.SUCCEEDED
    assert reaped.output_location == output
    assert reaped.failure_reason is None
    assert "reaped" not in reaped.details
    assert report.jobs[0].outcome == "unchanged"
    assert report.jobs[0].to_status is None


# --- bounding, pagination, the scheduled function -----------------------------------------------------


def test_a_run_looks_at_most_at_its_budget_oldest_first_and_the_next_run_goes_on(world):
    ids = [
        world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=HOUR + timedelta(minutes=10 - i)).job_id
        for i in range(7)
    ]

    first = reap_stuck_jobs(world.store, max_jobs=3)
    second = reap_stuck_jobs(world.store, max_jobs=3)
    third = reap_stuck_jobs(world.store, max_jobs=3)

    assert [j.job_id for j in first.jobs] == ids[:3]
    assert [j.job_id for j in second.jobs] == ids[3:6]
    assert [j.job_id for j in third.jobs] == ids[6:]
    assert (first.truncated, second.truncated, third.truncated) == (True, True, False)
    assert all(world.get(job_id).status == JobStatus.FAILED for job_id in ids)


def test_the_index_is_read_page_by_page_per_status_and_kind(world):
    ids = []
    for i in range(5):
        ids.append(world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=HOUR + timedelta(minutes=i)).job_id)
        ids.append(world.job(kind=JobKind.BATCH, status=JobStatus.QUEUED, idle=HOUR + timedelta(minutes=i)).job_id)
    dynamodb = world.store.dynamodb

    with calls_recorded({"dynamodb": dynamodb}) as made:
        report = reap_stuck_jobs(world.store, max_jobs=50, page_size=2)

    assert sorted(j.job_id for j in report.jobs) == sorted(ids)
    assert not report.truncated
    # Ten rows in pages of two for each kind, then one empty query for each other status and kind.
    assert made.count("dynamodb.Query") >= 10
    assert "dynamodb.Scan" not in made


def test_a_job_that_cannot_be_looked_at_fails_the_run_after_the_others(world):
    stuck = world.job(status=JobStatus.RUNNING, idle=2 * HOUR, execution_id=world.execution("FAILED"))
    queued = world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=HOUR)

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeExecution")

    sfn = clients.get("stepfunctions")
    sfn.meta.events.register("before-call.sfn.DescribeExecution", throttled)
    try:
        with pytest.raises(ReaperIncomplete, match="1 of 2"):
            run_reaper(world.store, max_jobs=10)
    finally:
        sfn.meta.events.unregister("before-call.sfn.DescribeExecution", throttled)

    assert world.get(queued.job_id).status == JobStatus.FAILED
    assert world.get(stuck.job_id).status == JobStatus.RUNNING


def test_the_scheduled_function_reaps_within_its_settings_budget(world, lambda_context, monkeypatch):
    for _ in range(3):
        world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=HOUR)
    monkeypatch.setenv("SLUICE_REAPER_MAX_JOBS_PER_RUN", "2")
    get_settings.cache_clear()

    answer = load_handler("job_reaper").lambda_handler(load_event("job_reaper/scheduled-run.json"), lambda_context)

    assert answer["examined"] == 2
    assert answer["truncated"] is True
    assert [j["outcome"] for j in answer["jobs"]] == ["failed", "failed"]


def test_the_queued_limit_is_the_setting(world, monkeypatch):
    job = world.job(kind=JobKind.ASYNC, status=JobStatus.QUEUED, idle=timedelta(minutes=20))
    assert reap_stuck_jobs(world.store, max_jobs=10).examined == 0

    monkeypatch.setenv("SLUICE_REAPER_QUEUED_LIMIT_MINUTES", "10")
    get_settings.cache_clear()
    reap_stuck_jobs(world.store, max_jobs=10)

    assert world.get(job.job_id).status == JobStatus.FAILED
