"""statemachines/training.asl.json run by moto's interpreter, with the real handlers in-process.

moto's SageMaker training jobs are scripted per job name (tests/training_support.TrainingScript): each
attempt reports InProgress, then Completed with its final metrics, a spot interruption, a capacity
shortage, an algorithm error or a stop, and "checkpoints" into the run's checkpoint location.
"""

from __future__ import annotations

import json

import pytest

from sluice.jobs.kinds.training.models import MetricDefinitionSpec, RegisterSpec, TrainingExecutionInput
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.settings import get_settings
from sluice.storage.keys import checkpoint_prefix, s3_uri, training_output_prefix
from tests.api_support import event
from tests.conftest import FIXTURES, load_handler
from tests.jobs_support import as_caller, for_path_id
from tests.training_support import CHECKPOINT_METRIC, RESUME_METRIC, Attempt, training_stack
from tests.workflow_support import (
    CALLER,
    decide,
    history,
    new_job_id,
    pending_approval,
    start_execution,
    states_entered,
    wait_for_execution,
)

MACHINE = "TrainingStateMachineArn"
TO_RUNNING = ["Plan first attempt", "Approval needed?", "Mark job running", "Job still wanted?", "Begin first attempt"]
# One attempt that ends at its first status check.
ONE_ATTEMPT = [
    "Check checkpoint and start attempt",
    "Attempt still wanted?",
    "Start polling",
    "Wait for attempt",
    "Describe training job",
    "Training job status?",
    "Record attempt outcome",
    "Outcome?",
]
RETRY = ["Wait before next attempt", "Begin next attempt"]
REGISTERED = ["Register model version", "Mark job succeeded", "Job finished"]
ACCURACY = "validation:accuracy"


@pytest.fixture(scope="module")
def stack():
    # The fixture catalog: its trainers section has iris (POST /v1/training-jobs reads it).
    catalog = json.loads((FIXTURES / "catalog.json").read_text())
    with training_stack("sluice-training-flow", catalog) as deployed:
        yield deployed


@pytest.fixture
def settings_env(monkeypatch):
    """Change a training setting for one test (the handlers run in this process and read its environment)."""

    def change(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield change
    monkeypatch.undo()
    get_settings.cache_clear()


def submit(
    stack,
    *,
    instance_type: str = "ml.m5.large",
    spot: bool = True,
    max_attempts: int = 3,
    register: RegisterSpec | None = None,
    status: JobStatus = JobStatus.QUEUED,
) -> TrainingExecutionInput:
    """What training submission does: the job record, then the execution input."""
    job_id = new_job_id()
    bucket = stack.bucket
    execution_input = TrainingExecutionInput(
        job_id=job_id,
        caller=CALLER,
        trainer="iris",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/iris-trainer:1",
        inference_image="123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1",
        metric_definitions=[
            MetricDefinitionSpec(Name=ACCURACY, Regex="validation:accuracy=([0-9.]+)"),
            MetricDefinitionSpec(Name=RESUME_METRIC, Regex="resumed from epoch ([0-9]+)"),
            MetricDefinitionSpec(Name=CHECKPOINT_METRIC, Regex="checkpoint saved: epoch ([0-9]+)"),
        ],
        resume_metric=RESUME_METRIC,
        checkpoint_metric=CHECKPOINT_METRIC,
        hyperparameters={"epochs": "40", "checkpoint_every": "1"},
        input_uri=s3_uri(bucket, f"uploads/{CALLER}/iris/"),
        output_uri=s3_uri(bucket, training_output_prefix(CALLER, job_id)),
        checkpoint_uri=s3_uri(bucket, checkpoint_prefix(CALLER, job_id)),
        instance_type=instance_type,
        instance_count=1,
        fallback_instance_types=["ml.m5.xlarge", "ml.c5.xlarge"],
        spot=spot,
        max_runtime_seconds=3600,
        max_wait_seconds=7200 if spot else None,
        max_attempts=max_attempts,
        registration=register,
    )
    stack.store().create(
        Job(
            job_id=job_id,
            caller=CALLER,
            kind=JobKind.TRAINING,
            model="iris",
            input_location=execution_input.input_uri,
            output_location=execution_input.output_uri,
            details={
                "trainer": "iris",
                "instance_type": instance_type,
                "checkpoint_uri": execution_input.checkpoint_uri,
            },
            status=status,
        )
    )
    return execution_input


def start(stack, execution_input: TrainingExecutionInput) -> str:
    # As kinds.training.start sends it: the model's JSON, with the body's names ("register").
    return start_execution(stack, MACHINE, json.loads(execution_input.model_dump_json()))


def run(stack, execution_input: TrainingExecutionInput, timeout: float = 60) -> dict:
    return wait_for_execution(stack, start(stack, execution_input), timeout)


def name(execution_input: TrainingExecutionInput, attempt: int) -> str:
    return f"{execution_input.job_id}-{attempt}"


def created_for(stack, job_id: str) -> list[dict]:
    return [job for job in stack.training.created if job["TrainingJobName"].startswith(job_id)]


def attempts_of(stack, job_id: str) -> list[dict]:
    return stack.store().get(job_id).details["attempts"]


def gate(threshold: float = 0.9) -> RegisterSpec:
    return RegisterSpec(group="iris", metric=ACCURACY, threshold=threshold)


def checkpoints(stack, execution_input: TrainingExecutionInput) -> list[str]:
    listed = stack.client("s3").list_objects_v2(
        Bucket=stack.bucket, Prefix=checkpoint_prefix(CALLER, execution_input.job_id)
    )
    return [item["Key"] for item in listed.get("Contents", [])]


# ---------------------------------------------------------------------- happy path
def test_happy_path_one_attempt_completes_and_its_model_is_registered_approved(stack):
    execution_input = submit(stack, register=gate(0.9))
    stack.training.attempts[name(execution_input, 1)] = Attempt(
        polls=1, checkpoint=40, metrics={ACCURACY: 0.967, "train:loss": 0.08}, billable_seconds=321
    )
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == [
        *TO_RUNNING,
        *ONE_ATTEMPT[:6],
        "Count status check",
        "Poll limit reached?",
        "Wait for attempt",
        "Describe training job",
        "Training job status?",
        *ONE_ATTEMPT[6:],
        *REGISTERED,
    ]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    [attempt] = job.details["attempts"]
    assert attempt["training_job_name"] == name(execution_input, 1)
    assert (attempt["status"], attempt["secondary_status"], attempt["outcome"]) == (
        "Completed",
        "Completed",
        "succeeded",
    )
    assert (attempt["resumed_from_step"], attempt["last_checkpoint_step"]) == (0, 40)
    assert attempt["billable_seconds"] == 321
    assert attempt["restarted_from_zero"] is False
    assert job.details["watermark"] == 40
    assert job.details["billable_seconds"] == 321
    assert job.details["metrics"][ACCURACY] == pytest.approx(0.967)
    artifact = f"{execution_input.output_uri}{name(execution_input, 1)}/output/model.tar.gz"
    assert job.details["model_artifact"] == artifact
    package = job.details["model_package"]
    assert (package["group"], package["approval_status"]) == ("iris", "Approved")
    assert package["reason"] == "validation:accuracy 0.967 >= threshold 0.9"
    described = stack.client("sagemaker").describe_model_package(ModelPackageName=package["arn"])
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == artifact
    assert described["CustomerMetadataProperties"]["sluice:job-id"] == job.job_id

    [created] = created_for(stack, job.job_id)
    assert created["algorithm_specification"]["TrainingImage"] == execution_input.image
    assert created["checkpoint_config"] == {"S3Uri": execution_input.checkpoint_uri, "LocalPath": "/opt/ml/checkpoints"}
    assert created["enable_managed_spot_training"] is True
    assert created["stopping_condition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert created["resource_config"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert created["input_data_config"][0]["DataSource"]["S3DataSource"]["S3Uri"] == execution_input.input_uri
    assert created["output_data_config"] == {"S3OutputPath": execution_input.output_uri}
    assert created["hyper_parameters"] == {"epochs": "40", "checkpoint_every": "1"}
    assert {"Key": "sluice:trainer", "Value": "iris"} in created["tags"]
    [announced] = stack.job_events(job.job_id, wait=2)
    assert announced["job"]["status"] == "SUCCEEDED"


def test_happy_path_without_a_register_spec_the_job_records_the_model_and_registers_nothing(stack):
    execution_input = submit(stack, spot=False)
    stack.training.attempts[name(execution_input, 1)] = Attempt(checkpoint=40, metrics={ACCURACY: 0.95})
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-3:] == ["Outcome?", "Mark job succeeded", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert "model_package" not in job.details
    [created] = created_for(stack, job.job_id)
    # On-demand: no spot, and no spot wait.
    assert created["enable_managed_spot_training"] is False
    assert created["stopping_condition"] == {"MaxRuntimeInSeconds": 3600}


# ---------------------------------------------------------------------- interruptions
def test_retry_path_an_interrupted_attempt_is_resumed_from_its_checkpoint(stack):
    execution_input = submit(stack, register=gate())
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="Interrupted", checkpoint=5, billable_seconds=100)
    stack.training.attempts[name(execution_input, 2)] = Attempt(
        resumed_from=5, checkpoint=40, metrics={ACCURACY: 0.97}, billable_seconds=250
    )
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == [
        *TO_RUNNING,
        *ONE_ATTEMPT,
        *RETRY,
        *ONE_ATTEMPT,
        *REGISTERED,
    ]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    first, second = job.details["attempts"]
    assert (first["status"], first["secondary_status"], first["outcome"]) == ("Failed", "Interrupted", "interrupted")
    assert first["failure_reason"].startswith("Spot interruption:")
    assert (first["resumed_from_step"], first["last_checkpoint_step"]) == (0, 5)
    assert second["resumed_from_step"] >= first["last_checkpoint_step"]
    assert (second["resumed_from_step"], second["last_checkpoint_step"], second["outcome"]) == (5, 40, "succeeded")
    assert second["restarted_from_zero"] is False
    assert job.details["watermark"] == 40
    assert job.details["billable_seconds"] == 350
    assert job.details["training_job_name"] == name(execution_input, 2)
    # Both attempts on spot (one spot failure is below TrainingSpotFailuresBeforeOnDemand), one checkpoint location.
    created = created_for(stack, job.job_id)
    assert [c["TrainingJobName"] for c in created] == [name(execution_input, 1), name(execution_input, 2)]
    assert {c["checkpoint_config"]["S3Uri"] for c in created} == {execution_input.checkpoint_uri}
    assert [c["enable_managed_spot_training"] for c in created] == [True, True]
    assert job.details["model_package"]["approval_status"] == "Approved"


def test_retry_path_a_run_interrupted_until_its_attempts_run_out_fails_saying_so(stack, settings_env):
    settings_env("SLUICE_TRAINING_SPOT_FAILURES_BEFORE_ON_DEMAND", "10")
    execution_input = submit(stack, max_attempts=3)
    for attempt, (resumed, checkpoint) in enumerate([(None, 3), (3, 6), (6, 9)], start=1):
        stack.training.attempts[name(execution_input, attempt)] = Attempt(
            end="Interrupted", resumed_from=resumed, checkpoint=checkpoint
        )
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path.count("Check checkpoint and start attempt") == 3
    assert path[-4:] == ["Outcome?", "Attempt failed", "Mark job failed", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith(
        "3 attempts, all interrupted or short of capacity (max_attempts 3); the last: Spot"
    )
    assert f"checkpointed up to step 9 under {execution_input.checkpoint_uri}" in job.failure_reason
    assert job.details["failure_type"] == "AttemptsExhausted"
    assert [a["last_checkpoint_step"] for a in job.details["attempts"]] == [3, 6, 9]
    assert job.details["watermark"] == 9
    assert len(created_for(stack, job.job_id)) == 3


# ---------------------------------------------------------------------- capacity
def test_capacity_path_a_capacity_shortage_moves_to_the_next_instance_type(stack):
    execution_input = submit(stack)
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="CapacityError", billable_seconds=0)
    stack.training.attempts[name(execution_input, 2)] = Attempt(checkpoint=40, metrics={ACCURACY: 0.93})
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    created = created_for(stack, execution_input.job_id)
    assert [c["resource_config"]["InstanceType"] for c in created] == ["ml.m5.large", "ml.m5.xlarge"]
    assert [c["enable_managed_spot_training"] for c in created] == [True, True]
    first, second = attempts_of(stack, execution_input.job_id)
    assert first["outcome"] == "capacity"
    assert first["failure_reason"].startswith("CapacityError: Unable to provision")
    assert (second["instance_type"], second["spot"]) == ("ml.m5.xlarge", True)


def test_capacity_path_after_two_spot_failures_the_run_goes_on_demand(stack):
    execution_input = submit(stack)
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="Interrupted", checkpoint=4)
    stack.training.attempts[name(execution_input, 2)] = Attempt(end="CapacityError", billable_seconds=0)
    stack.training.attempts[name(execution_input, 3)] = Attempt(resumed_from=4, checkpoint=40)
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    created = created_for(stack, execution_input.job_id)
    # TrainingSpotFailuresBeforeOnDemand (2): the interruption and the shortage; the third attempt is on-demand.
    assert [c["enable_managed_spot_training"] for c in created] == [True, True, False]
    assert created[2]["stopping_condition"] == {"MaxRuntimeInSeconds": 3600}
    assert created[2]["resource_config"]["InstanceType"] == "ml.m5.large"
    attempts = attempts_of(stack, execution_input.job_id)
    assert [a["spot"] for a in attempts] == [True, True, False]
    # The shortage attempt never trained: no progress to judge, and the watermark stays the first's.
    assert attempts[1]["restarted_from_zero"] is False
    assert attempts[2]["resumed_from_step"] == 4


# ---------------------------------------------------------------------- failures that end the run at once
def test_catch_path_an_algorithm_error_fails_the_run_at_once_with_sagemakers_reason(stack):
    end = "AlgorithmError"
    execution_input = submit(stack, max_attempts=3)
    stack.training.attempts[name(execution_input, 1)] = Attempt(end=end, checkpoint=2)
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-4:] == ["Outcome?", "Attempt failed", "Mark job failed", "Job finished"]
    assert path.count("Check checkpoint and start attempt") == 1
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith(f"{end}: ")
    assert job.details["failure_type"] == "TrainingJobFailed"
    [attempt] = job.details["attempts"]
    assert attempt["outcome"] == "failed"
    assert attempt["failure_reason"] == job.failure_reason
    assert len(created_for(stack, job.job_id)) == 1


def test_catch_path_max_runtime_exceeded_fails_the_run_saying_what_to_change(stack):
    execution_input = submit(stack)
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="MaxRuntimeExceeded", checkpoint=30)
    run(stack, execution_input)

    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith("MaxRuntimeExceeded: training job ")
    assert "max_runtime_seconds (3600 s)" in job.failure_reason
    assert len(created_for(stack, job.job_id)) == 1


def test_fail_closed_a_resumed_attempt_without_a_checkpoint_is_never_started(stack):
    execution_input = submit(stack)
    first = name(execution_input, 1)
    stack.training.attempts[first] = Attempt(end="Interrupted", checkpoint=5)
    # The checkpoint the attempt uploaded is gone before the next attempt (a lifecycle rule, a person).
    stack.training.on_end[first] = lambda: delete_checkpoints(stack, execution_input)
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-5:] == [
        "Begin next attempt",
        "Check checkpoint and start attempt",
        "No checkpoint to resume from",
        "Mark job failed",
        "Job finished",
    ]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason == (
        "no checkpoint to resume from: attempt 2 would train from zero although step 5 was checkpointed under "
        f"{execution_input.checkpoint_uri}"
    )
    assert job.details["failure_type"] == "NoCheckpointToResume"
    assert [c["TrainingJobName"] for c in created_for(stack, job.job_id)] == [first]
    assert len(job.details["attempts"]) == 1


def delete_checkpoints(stack, execution_input: TrainingExecutionInput) -> None:
    s3 = stack.client("s3")
    for key in checkpoints(stack, execution_input):
        s3.delete_object(Bucket=stack.bucket, Key=key)


def test_progress_proof_an_attempt_that_restarted_from_zero_is_flagged_and_fails_the_run(stack):
    execution_input = submit(stack, register=gate())
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="Interrupted", checkpoint=5)
    # It found the checkpoint location full but logged no "resumed from epoch": it started over.
    stack.training.attempts[name(execution_input, 2)] = Attempt(checkpoint=40, metrics={ACCURACY: 0.97})
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-4:] == ["Outcome?", "Attempt failed", "Mark job failed", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "RestartedFromZero"
    assert job.failure_reason.startswith(
        f"Attempt 2 ({name(execution_input, 2)}) restarted from zero: it started at step 0 although step 5 was "
        f"checkpointed under {execution_input.checkpoint_uri}."
    )
    first, second = job.details["attempts"]
    assert (second["restarted_from_zero"], second["outcome"]) == (True, "restarted_from_zero")
    assert first["restarted_from_zero"] is False
    assert job.details["restarted_from_zero"] is True
    assert "model_package" not in job.details


def test_progress_proof_with_warn_a_from_zero_restart_is_recorded_and_the_run_goes_on(stack, settings_env):
    settings_env("SLUICE_TRAINING_FROM_ZERO_RESTART", "warn")
    execution_input = submit(stack)
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="Interrupted", checkpoint=5)
    stack.training.attempts[name(execution_input, 2)] = Attempt(resumed_from=2, checkpoint=40)
    run(stack, execution_input)

    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["attempts"][1]["restarted_from_zero"] is True
    [warning] = job.details["warnings"]
    assert warning.startswith(f"attempt 2 ({name(execution_input, 2)}) restarted from zero: it started at step 2")


def test_budget_path_no_attempt_starts_once_the_billable_budget_is_reached(stack, settings_env):
    settings_env("SLUICE_TRAINING_BILLABLE_SECONDS_BUDGET", "100")
    execution_input = submit(stack, max_attempts=3)
    stack.training.attempts[name(execution_input, 1)] = Attempt(end="Interrupted", checkpoint=5, billable_seconds=120)
    run(stack, execution_input)

    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "BillableBudgetReached"
    assert job.failure_reason.startswith("The run's 1 attempts billed 120 s, which reaches the budget of 100 s")
    assert len(created_for(stack, job.job_id)) == 1


# ---------------------------------------------------------------------- nothing left running
def test_poll_limit_a_training_job_still_running_after_the_last_check_is_stopped_and_the_run_fails(stack):
    execution_input = submit(stack)
    first = name(execution_input, 1)
    stack.training.attempts[first] = Attempt(polls=100)
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path.count("Describe training job") == 3  # TrainingMaxPolls
    assert path[-4:] == ["Training job ran too long", "Stop training job", "Mark job failed", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "TrainingJobTooLong"
    assert job.failure_reason.startswith(f"Training job {first} was still InProgress after 3 status checks")
    assert stack.training.stopped == [*stack.training.stopped[:-1], first]
    assert stack.training.status_of(first) == "Stopped"


def test_cancel_mid_attempt_the_training_job_is_stopped_and_the_job_stays_cancelled(stack, lambda_context):
    from tests.test_jobs_batch_safety import cancel_through_api

    execution_input = submit(stack)
    first = name(execution_input, 1)
    stack.training.attempts[first] = Attempt(polls=2)
    # The API's cancel (its StopExecution refused, the harder case): the kind's cancel hook stops the attempt.
    stack.training.on_describe[first] = lambda: cancel_through_api(execution_input.job_id, lambda_context)
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-4:] == ["Training job status?", "Record attempt outcome", "Outcome?", "Job already final"]
    assert path.count("Describe training job") == 1
    assert first in stack.training.stopped
    assert stack.training.status_of(first) == "Stopped"
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.CANCELLED
    [attempt] = job.details["attempts"]
    assert (attempt["status"], attempt["outcome"]) == ("Stopped", "stopped")
    assert len(created_for(stack, job.job_id)) == 1


def test_cancel_before_the_attempt_is_recorded_no_training_job_is_created(stack, lambda_context):
    from tests.test_jobs_batch_safety import cancel_through_api

    execution_input = submit(stack, status=JobStatus.RUNNING)
    cancel_through_api(execution_input.job_id, lambda_context)
    execution = run(stack, execution_input)

    assert states_entered(stack, execution["executionArn"])[-3:] == [
        "Mark job running",
        "Job still wanted?",
        "Job already final",
    ]
    assert created_for(stack, execution_input.job_id) == []


def test_cancel_while_the_training_job_is_created_the_start_step_stops_it(stack, lambda_context):
    from tests.test_jobs_batch_safety import cancel_through_api

    execution_input = submit(stack)
    first = name(execution_input, 1)
    stack.training.attempts[first] = Attempt(polls=5)
    stack.training.after_create[first] = lambda: cancel_through_api(execution_input.job_id, lambda_context)
    execution = run(stack, execution_input)

    assert states_entered(stack, execution["executionArn"])[-3:] == [
        "Check checkpoint and start attempt",
        "Attempt still wanted?",
        "Job already final",
    ]
    assert stack.training.status_of(first) == "Stopped"
    assert stack.store().get(execution_input.job_id).status == JobStatus.CANCELLED


def test_catch_path_a_failing_status_check_stops_the_training_job_and_fails_the_run(stack):
    execution_input = submit(stack)
    first = name(execution_input, 1)
    stack.training.attempts[first] = Attempt(polls=5)
    # More errors than the task retries (SdkRetryMaxAttempts 2).
    stack.training.describe_errors[first] = [("InternalError", "We encountered an internal error")] * 3
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-4:] == ["Describe training job", "Stop training job", "Mark job failed", "Job finished"]
    assert stack.training.status_of(first) == "Stopped"
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert "internal error" in job.failure_reason


def test_catch_path_a_failing_outcome_step_lands_in_stop_training_job_then_fails_the_run(stack):
    execution_input = submit(stack)
    first = name(execution_input, 1)
    stack.training.attempts[first] = Attempt(polls=0, checkpoint=40)
    # The workflow's status check sees the end; the outcome step's own read of the job is refused.
    stack.training.on_describe[first] = lambda: stack.training.describe_errors.__setitem__(
        first, [("AccessDeniedException", "not authorized to perform sagemaker:DescribeTrainingJob")]
    )
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-4:] == ["Record attempt outcome", "Stop training job", "Mark job failed", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert "not authorized" in job.failure_reason


def test_catch_path_a_quota_refusal_fails_the_run_saying_what_to_do(stack):
    execution_input = submit(stack)
    stack.training.create_errors[execution_input.job_id] = [
        ("ResourceLimitExceeded", "The account-level service limit 'ml.m5.large for spot training job usage' is 0")
    ]
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-3:] == ["Training quota exceeded", "Mark job failed", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert "Request a quota increase" in job.failure_reason
    assert "1 x ml.m5.large (spot training job usage)" in job.failure_reason
    assert created_for(stack, job.job_id) == []


def test_retry_path_a_throttled_create_is_retried_by_the_task_not_a_new_attempt(stack):
    execution_input = submit(stack)
    stack.training.create_errors[execution_input.job_id] = [("ThrottlingException", "Rate exceeded")]
    stack.training.attempts[name(execution_input, 1)] = Attempt(checkpoint=40)
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    failures = [
        e["taskFailedEventDetails"] for e in history(stack, execution["executionArn"]) if "taskFailedEventDetails" in e
    ]
    assert [failure["error"] for failure in failures] == ["TrainingApiThrottled"]
    assert states_entered(stack, execution["executionArn"]).count("Check checkpoint and start attempt") == 1
    assert stack.store().get(execution_input.job_id).status == JobStatus.SUCCEEDED


def test_catch_path_a_failing_registration_fails_the_run(stack, monkeypatch):
    from moto.core.exceptions import JsonRESTError
    from moto.sagemaker.models import SageMakerModelBackend

    def refuse(*_args, **_kwargs):
        raise JsonRESTError("ValidationException", "Model package group iris is being deleted")

    monkeypatch.setattr(SageMakerModelBackend, "create_model_package", refuse)
    execution_input = submit(stack, register=gate())
    stack.training.attempts[name(execution_input, 1)] = Attempt(checkpoint=40, metrics={ACCURACY: 0.97})
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-3:] == ["Register model version", "Mark job failed", "Job finished"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert "being deleted" in job.failure_reason


# ---------------------------------------------------------------------- the registry gate
def test_gate_a_metric_below_the_threshold_registers_a_rejected_version(stack):
    execution_input = submit(stack, register=gate(0.999))
    stack.training.attempts[name(execution_input, 1)] = Attempt(checkpoint=40, metrics={ACCURACY: 0.967})
    execution = run(stack, execution_input)

    assert states_entered(stack, execution["executionArn"])[-3:] == REGISTERED
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    package = job.details["model_package"]
    assert package["approval_status"] == "Rejected"
    assert package["reason"] == "validation:accuracy 0.967 is below threshold 0.999"
    described = stack.client("sagemaker").describe_model_package(ModelPackageName=package["arn"])
    assert described["ModelApprovalStatus"] == "Rejected"


# ---------------------------------------------------------------------- approvals


def test_approval_path_an_operator_approves_and_the_run_trains(stack, lambda_context):
    execution_input = submit(stack, instance_type="ml.p3.2xlarge")
    job_id = execution_input.job_id
    stack.training.attempts[name(execution_input, 1)] = Attempt(checkpoint=40)
    execution_arn = start(stack, execution_input)

    approval = pending_approval(stack, "training", job_id)
    assert stack.store().get(job_id).status == JobStatus.AWAITING_APPROVAL
    assert (approval.kind, approval.instance_type, approval.requested_by) == ("training", "ml.p3.2xlarge", CALLER)
    assert created_for(stack, job_id) == []
    assert decide(lambda_context, "approve", approval.approval_id, "GPU run, ML-311")["statusCode"] == 200

    execution = wait_for_execution(stack, execution_arn, timeout=60)
    assert execution["status"] == "SUCCEEDED"
    path = states_entered(stack, execution_arn)
    assert path[:4] == ["Plan first attempt", "Approval needed?", "Wait for an operator's approval", "Mark job running"]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["approval"]["decision"] == "approved"
    [created] = created_for(stack, job_id)
    assert created["resource_config"]["InstanceType"] == "ml.p3.2xlarge"


def test_approval_path_an_operator_denies_and_nothing_trains(stack, lambda_context):
    execution_input = submit(stack, instance_type="ml.p3.2xlarge")
    execution_arn = start(stack, execution_input)
    approval = pending_approval(stack, "training", execution_input.job_id)
    decide(lambda_context, "deny", approval.approval_id, "ml.m5.xlarge is enough for iris")

    assert wait_for_execution(stack, execution_arn)["status"] == "SUCCEEDED"
    path = states_entered(stack, execution_arn)
    assert path[2:4] == ["Wait for an operator's approval", "Mark job failed"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason == "Instance approval denied by platform: ml.m5.xlarge is enough for iris"
    assert job.details["failure_type"] == "ApprovalDenied"
    assert created_for(stack, execution_input.job_id) == []


def test_approval_path_nobody_decides_and_the_run_fails_with_approval_timed_out(stack):
    execution_input = submit(stack, instance_type="ml.p4d.24xlarge")
    execution_arn = start(stack, execution_input)
    pending_approval(stack, "training", execution_input.job_id)

    assert wait_for_execution(stack, execution_arn, timeout=30)["status"] == "SUCCEEDED"
    path = states_entered(stack, execution_arn)
    assert path[2:5] == ["Wait for an operator's approval", "Approval timed out", "Mark job failed"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "ApprovalTimedOut"
    assert "1 x ml.p4d.24xlarge" in job.failure_reason
    assert created_for(stack, execution_input.job_id) == []


# ---------------------------------------------------------------------- through the API
def test_end_to_end_a_run_submitted_through_the_api_resumes_after_an_interruption_and_is_registered(
    stack, lambda_context
):
    """POST /v1/training-jobs (an operator, the sample request) starts this workflow with the job row's
    input; GET /v1/jobs/{id} then shows both attempts, the resumed step and the registered version."""
    api = load_handler("api")
    prefix = "uploads/platform/iris-train/"
    stack.client("s3").put_object(Bucket=stack.bucket, Key=f"{prefix}iris.csv", Body=b"setosa,5.1,3.5,1.4,0.2\n")
    stack.training.next_attempts = [
        Attempt(end="Interrupted", checkpoint=5, billable_seconds=90),
        Attempt(resumed_from=5, checkpoint=40, metrics={ACCURACY: 0.967}, billable_seconds=200),
    ]
    submitted = event("training-job-create")
    body = {**json.loads(submitted["body"]), "input_prefix": s3_uri(stack.bucket, prefix)}
    response = api.lambda_handler({**submitted, "body": json.dumps(body)}, lambda_context)
    assert response["statusCode"] == 202, response["body"]
    job_id = json.loads(response["body"])["id"]
    job = stack.store().get(job_id)
    assert job.execution_id

    execution = wait_for_execution(stack, job.execution_id, timeout=60)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, job.execution_id)[-3:] == REGISTERED
    shown = api.lambda_handler(for_path_id(as_caller(event("job-get"), "platform"), "job_id", job_id), lambda_context)
    assert shown["statusCode"] == 200, shown["body"]
    view = json.loads(shown["body"])
    assert view["status"] == "SUCCEEDED"
    first, second = view["details"]["attempts"]
    assert (first["secondary_status"], first["last_checkpoint_step"]) == ("Interrupted", 5)
    assert second["resumed_from_step"] >= first["last_checkpoint_step"]
    assert view["details"]["model_package"]["approval_status"] == "Approved"
    assert view["details"]["model_package"]["group"] == "iris"
    assert stack.training.next_attempts == []
