"""The training workflow's decisions and contracts, without a stack: the first attempt's plan, the
capacity fallback order, what an ended attempt proves and what the run does next, the start step's
protocol (checkpoint check, claim, create, errors), the sample events, and training.asl.json against
template.yaml (every Task bounded and caught, every substitution declared, the poll loop's bounds)."""

from __future__ import annotations

import json
import re

import pytest
from botocore.stub import Stubber
from samtranslator.yaml_helper import yaml_parse

from sluice.jobs.kinds.training.attempts import (
    AttemptStart,
    NoCheckpointToResume,
    TrainingApiThrottled,
    TrainingQuotaExceeded,
    TrainingStartFailed,
    create_request,
    ensure_checkpoint,
    start_attempt,
)
from sluice.jobs.kinds.training.models import AttemptPlan, TrainingExecutionInput
from sluice.jobs.kinds.training.outcome import judge_attempt
from sluice.jobs.kinds.training.policy import first_attempt_plan, next_instance_type, plan_first_attempt
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.settings import Settings
from tests.conftest import ROOT, load_event, load_handler, shared_client

STATEMACHINES = ROOT / "statemachines"
RESUME, CHECKPOINT, ACCURACY = "sluice:resumed_from_step", "sluice:checkpoint_step", "validation:accuracy"
SETTINGS = Settings(
    batch_unapproved_instance_types=("ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"),
    training_role_arn="arn:aws:iam::123456789012:role/sluice-training",
    training_billable_seconds_budget=10_000,
    training_spot_failures_before_on_demand=2,
    training_from_zero_restart="fail",
)


def sample_job(**changes) -> TrainingExecutionInput:
    job = TrainingExecutionInput.model_validate_json((STATEMACHINES / "training.input.json").read_text())
    return job.model_copy(update=changes)


def plan(number: int = 1, **changes) -> AttemptPlan:
    return first_attempt_plan(sample_job()).model_copy(update={"number": number, **changes})


def described(status: str, secondary: str, reason: str | None = None, billable: int = 60, **metrics: float) -> dict:
    found = {"TrainingJobStatus": status, "SecondaryStatus": secondary, "BillableTimeInSeconds": billable}
    if reason:
        found["FailureReason"] = reason
    found["FinalMetricDataList"] = [{"MetricName": name, "Value": value} for name, value in metrics.items()]
    found["ModelArtifacts"] = {"S3ModelArtifacts": "s3://b/training-output/x/model.tar.gz"}
    return found


def progress(resumed: int | None = None, checkpoint: int | None = None, **others: float) -> dict[str, float]:
    metrics = dict(others)
    if resumed is not None:
        metrics[RESUME] = resumed
    if checkpoint is not None:
        metrics[CHECKPOINT] = checkpoint
    return metrics


INTERRUPTED = ("Failed", "Interrupted", "Spot interruption: the instance was reclaimed")
CAPACITY = ("Failed", "Failed", "CapacityError: Unable to provision requested ML compute capacity.")


def judge(current: AttemptPlan, status: tuple, *, job=None, cancelled=False, settings=SETTINGS, **metrics):
    return judge_attempt(
        job or sample_job(), current, described(*status, **metrics), cancelled=cancelled, settings=settings
    )


# ---------------------------------------------------------------------- the first attempt
def test_the_first_attempt_runs_an_approval_free_type_on_spot_at_once():
    first = plan_first_attempt(sample_job(), SETTINGS)

    assert not first.needs_approval
    assert first.timeout_seconds == 24 * 3600  # ApprovalTimeoutHours' default
    assert first.plan == AttemptPlan(number=1, name_prefix=sample_job().job_id, instance_type="ml.m5.large", spot=True)
    assert first.record == {"instance_type": "ml.m5.large", "instance_count": 1, "spot": True}


def test_a_larger_instance_type_waits_for_an_operator():
    first = plan_first_attempt(sample_job(instance_type="ml.p3.2xlarge", instance_count=2), SETTINGS)

    assert first.needs_approval
    assert first.reason.startswith("2 x ml.p3.2xlarge needs an operator's approval")


def test_capacity_falls_back_in_the_trainers_order_to_approval_free_types_only():
    job = sample_job(fallback_instance_types=["ml.m5.xlarge", "ml.p3.2xlarge", "ml.c5.xlarge"])

    assert next_instance_type(job, "ml.m5.large", SETTINGS) == "ml.m5.xlarge"
    # ml.p3.2xlarge needs an approval nobody gave: skipped.
    assert next_instance_type(job, "ml.m5.xlarge", SETTINGS) == "ml.c5.xlarge"
    assert next_instance_type(job, "ml.c5.xlarge", SETTINGS) is None


# ---------------------------------------------------------------------- what an attempt proves
def test_a_completed_attempt_succeeds_with_its_metrics_and_artifact():
    judged = judge(plan(), ("Completed", "Completed"), billable=300, **progress(checkpoint=40, **{ACCURACY: 0.97}))

    assert judged.outcome.outcome == "succeeded"
    assert judged.outcome.register_model is True
    assert judged.outcome.details["metrics"][ACCURACY] == 0.97
    assert judged.outcome.details["model_artifact"] == "s3://b/training-output/x/model.tar.gz"
    assert (judged.outcome.plan.watermark, judged.outcome.plan.billable_seconds) == (40, 300)
    record = judged.record
    assert (record.resumed_from_step, record.last_checkpoint_step, record.outcome) == (0, 40, "succeeded")
    assert record.training_job_name == f"{sample_job().job_id}-1"


def test_an_interruption_is_retried_from_the_checkpoint_on_spot_until_the_spot_failure_limit():
    judged = judge(plan(), INTERRUPTED, billable=100, **progress(checkpoint=5))

    assert judged.outcome.outcome == "retry"
    following = judged.outcome.plan
    assert (following.number, following.instance_type, following.spot) == (2, "ml.m5.large", True)
    assert (following.spot_failures, following.watermark, following.billable_seconds) == (1, 5, 100)
    assert judged.record.outcome == "interrupted"
    assert "Attempt 2 resumes from step 5 on ml.m5.large (spot)" in judged.outcome.reason

    waited = judge(plan(), ("Stopped", "MaxWaitTimeExceeded"), **progress(checkpoint=5))
    assert (waited.outcome.outcome, waited.record.outcome) == ("retry", "max_wait_exceeded")
    assert waited.outcome.plan.spot_failures == 1

    second = judge(following, INTERRUPTED, **progress(resumed=5, checkpoint=9))
    assert (second.outcome.plan.spot, second.outcome.plan.spot_failures) == (False, 2)
    assert second.outcome.plan.watermark == 9


def test_a_capacity_shortage_moves_to_the_next_type_then_on_demand_then_fails():
    job = sample_job(fallback_instance_types=["ml.m5.xlarge"])
    moved = judge(plan(), CAPACITY, job=job, billable=0)
    assert (moved.outcome.plan.instance_type, moved.outcome.plan.spot) == ("ml.m5.xlarge", True)
    assert moved.record.outcome == "capacity"

    settings = Settings(**{**SETTINGS.__dict__, "training_spot_failures_before_on_demand": 5})
    last = judge(plan(2, instance_type="ml.m5.xlarge", spot_failures=1), CAPACITY, job=job, settings=settings)
    # No type left on spot: on-demand may have capacity.
    assert (last.outcome.plan.instance_type, last.outcome.plan.spot) == ("ml.m5.xlarge", False)

    none_left = judge(plan(3, instance_type="ml.m5.xlarge", spot=False), CAPACITY, job=job)
    assert none_left.outcome.outcome == "failed"
    assert none_left.outcome.error == "CapacityUnavailable"
    assert "tried ml.m5.large, ml.m5.xlarge, on-demand included" in none_left.outcome.reason


def test_the_spot_failure_limit_sends_a_capacity_shortage_on_demand_on_the_same_type():
    judged = judge(plan(2, spot_failures=1, watermark=4), CAPACITY)

    assert (judged.outcome.plan.instance_type, judged.outcome.plan.spot) == ("ml.m5.large", False)
    # It never trained (no metrics): no restart is judged, the watermark is kept.
    assert judged.record.restarted_from_zero is False
    assert judged.outcome.plan.watermark == 4


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (("Failed", "Failed", "AlgorithmError: ValueError: bad row"), "AlgorithmError: ValueError: bad row"),
        (("Failed", "Failed", "ClientError: No S3 objects found"), "ClientError: No S3 objects found"),
        (("Stopped", "MaxRuntimeExceeded"), "MaxRuntimeExceeded: training job "),
        (("Failed", "Failed", "Something new"), "Something new"),
    ],
)
def test_algorithm_client_and_runtime_errors_fail_at_once_with_sagemakers_reason(status, reason):
    judged = judge(plan(), status, **progress(checkpoint=3))

    assert judged.outcome.outcome == "failed"
    assert judged.outcome.error == "TrainingJobFailed"
    assert judged.outcome.reason.startswith(reason)


def test_a_stop_is_a_cancel_only_when_the_job_was_cancelled():
    cancelled = judge(plan(), ("Stopped", "Stopped"), cancelled=True)
    assert (cancelled.outcome.outcome, cancelled.record.outcome) == ("cancelled", "stopped")

    stranger = judge(plan(), ("Stopped", "Stopped"))
    assert (stranger.outcome.outcome, stranger.outcome.error) == ("failed", "TrainingJobStopped")


def test_an_attempt_that_reported_progress_below_the_watermark_restarted_from_zero():
    judged = judge(plan(2, watermark=5), ("Completed", "Completed"), **progress(checkpoint=40))

    assert judged.record.restarted_from_zero is True
    assert judged.outcome.error == "RestartedFromZero"
    assert judged.outcome.reason.startswith("Attempt 2 (")
    assert "started at step 0 although step 5 was checkpointed" in judged.outcome.reason

    resumed = judge(plan(2, watermark=5), ("Completed", "Completed"), **progress(resumed=5, checkpoint=40))
    assert resumed.record.restarted_from_zero is False
    assert resumed.outcome.outcome == "succeeded"


def test_with_warn_a_from_zero_restart_is_a_warning_and_the_run_goes_on():
    settings = Settings(**{**SETTINGS.__dict__, "training_from_zero_restart": "warn"})
    judged = judge(
        plan(2, watermark=5), ("Completed", "Completed"), settings=settings, **progress(resumed=1, checkpoint=40)
    )

    assert judged.outcome.outcome == "succeeded"
    assert judged.record.restarted_from_zero is True
    assert judged.warning.startswith("attempt 2 (")


def test_attempts_stop_at_max_attempts_and_at_the_billable_budget():
    exhausted = judge(plan(3, watermark=6), INTERRUPTED, **progress(resumed=6, checkpoint=9))
    assert exhausted.outcome.error == "AttemptsExhausted"
    assert exhausted.outcome.reason.startswith("3 attempts, all interrupted")

    broke = judge(plan(1, billable_seconds=9_950), INTERRUPTED, billable=50, **progress(checkpoint=2))
    assert broke.outcome.error == "BillableBudgetReached"
    assert "billed 10000 s, which reaches the budget of 10000 s" in broke.outcome.reason


# ---------------------------------------------------------------------- starting an attempt
def test_a_spot_attempt_waits_for_capacity_and_an_on_demand_one_does_not():
    job = sample_job(max_wait_seconds=None)
    spot = create_request("n-1", AttemptStart(job=job, plan=plan()), SETTINGS)
    assert spot["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert spot["EnableManagedSpotTraining"] is True
    assert spot["RoleArn"] == SETTINGS.training_role_arn
    assert spot["CheckpointConfig"] == {"S3Uri": job.checkpoint_uri, "LocalPath": "/opt/ml/checkpoints"}
    assert spot["InputDataConfig"][0]["ContentType"] == "text/csv"
    assert spot["AlgorithmSpecification"]["MetricDefinitions"][0] == {
        "Name": "validation:accuracy",
        "Regex": "validation:accuracy=([0-9.]+)",
    }

    on_demand = create_request("n-2", AttemptStart(job=job, plan=plan(2, spot=False)), SETTINGS)
    assert on_demand["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert on_demand["EnableManagedSpotTraining"] is False


@pytest.fixture
def world(aws):
    """A jobs table and a data bucket in moto, and a RUNNING training job row for the sample input."""
    from sluice.jobs.store import JobStore

    dynamodb = shared_client("dynamodb")
    dynamodb.create_table(
        TableName="jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
    )
    shared_client("s3").create_bucket(Bucket="sluice-data-123456789012-us-east-1")
    store = JobStore(dynamodb, "jobs")
    job = sample_job()
    store.create(
        Job(
            job_id=job.job_id,
            caller=job.caller,
            kind=JobKind.TRAINING,
            model="iris",
            input_location=job.input_uri,
            status=JobStatus.RUNNING,
        )
    )
    return store


def test_a_resumed_attempt_needs_an_object_in_the_checkpoint_location():
    from moto import mock_aws

    with mock_aws():
        s3 = shared_client("s3")
        s3.create_bucket(Bucket="sluice-data-123456789012-us-east-1")
        job = sample_job()
        ensure_checkpoint(s3, job, plan(1, watermark=5))  # the first attempt has nothing to resume
        ensure_checkpoint(s3, job, plan(2, watermark=0))  # nothing was checkpointed yet
        with pytest.raises(NoCheckpointToResume) as refused:
            ensure_checkpoint(s3, job, plan(2, watermark=5))
        assert str(refused.value) == (
            "no checkpoint to resume from: attempt 2 would train from zero although step 5 was checkpointed "
            f"under {job.checkpoint_uri}"
        )
        s3.put_object(
            Bucket="sluice-data-123456789012-us-east-1", Key=f"checkpoints/team-risk/{job.job_id}/c-5.pkl", Body=b"5"
        )
        ensure_checkpoint(s3, job, plan(2, watermark=5))


def test_the_start_step_records_the_attempt_and_a_retried_start_follows_the_same_training_job(world):
    job = sample_job()
    request = AttemptStart(job=job, plan=plan())
    first = start_attempt(world, shared_client("sagemaker"), shared_client("s3"), request, SETTINGS)
    again = start_attempt(world, shared_client("sagemaker"), shared_client("s3"), request, SETTINGS)

    assert first.started
    assert again.started
    assert first.arn == again.arn
    stored = world.get(job.job_id)
    assert stored.details["training_job_name"] == f"{job.job_id}-1"
    [attempt] = stored.details["attempts"]
    assert (attempt["number"], attempt["instance_type"], attempt["spot"]) == (1, "ml.m5.large", True)


def test_a_job_no_longer_running_gets_no_training_job(world):
    job = sample_job()
    world.transition(job.job_id, JobStatus.CANCELLED)
    started = start_attempt(
        world, shared_client("sagemaker"), shared_client("s3"), AttemptStart(job=job, plan=plan()), SETTINGS
    )

    assert not started.started
    assert shared_client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


@pytest.mark.parametrize(
    ("code", "raised", "words"),
    [
        ("ThrottlingException", TrainingApiThrottled, "ThrottlingException: Rate exceeded"),
        ("ResourceLimitExceeded", TrainingQuotaExceeded, "Request a quota increase"),
        ("ValidationException", TrainingStartFailed, "SageMaker refused training job"),
    ],
)
def test_sagemakers_refusals_are_raised_under_the_names_the_workflow_acts_on(world, code, raised, words):
    import boto3

    sagemaker = boto3.client("sagemaker")
    with Stubber(sagemaker) as stub:
        stub.add_client_error("create_training_job", service_error_code=code, service_message="Rate exceeded")
        with pytest.raises(raised, match=words):
            start_attempt(world, sagemaker, shared_client("s3"), AttemptStart(job=sample_job(), plan=plan()), SETTINGS)


# ---------------------------------------------------------------------- sample events
def test_the_sample_events_are_what_the_workflow_sends_for_its_sample_input(lambda_context):
    from sluice.registry.models import RegistrationRequest

    decision = load_handler("training_policy").lambda_handler(
        load_event("training_policy/first-attempt.json"), lambda_context
    )
    assert decision["needs_approval"] is False
    assert decision["plan"] == load_event("training_attempt/start-attempt.json")["plan"]
    attempt = load_handler("training_attempt")
    start = attempt.StartRequest.model_validate(load_event("training_attempt/start-attempt.json"))
    finish = attempt.FinishRequest.model_validate(load_event("training_attempt/finish-attempt.json"))
    assert start.job == finish.job == sample_job()
    assert (finish.plan.number, finish.plan.watermark) == (2, 5)
    registration = RegistrationRequest.model_validate(load_event("model_registration/register-version.json"))
    assert registration.training_job_name == f"{sample_job().job_id}-2"


def test_the_registration_step_registers_the_sample_run(aws, lambda_context):
    shared_client("s3").create_bucket(Bucket="sluice-data-123456789012-us-east-1")
    answer = load_handler("model_registration").lambda_handler(
        load_event("model_registration/register-version.json"), lambda_context
    )

    assert (answer["group"], answer["version"], answer["approval_status"]) == ("iris", 1, "Approved")


# ---------------------------------------------------------------------- training.asl.json and template.yaml
def template() -> dict:
    return yaml_parse((ROOT / "template.yaml").read_text())


def definition(substitute: dict[str, str] | None = None) -> tuple[dict, set[str]]:
    text = (STATEMACHINES / "training.asl.json").read_text()
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    for key, value in (substitute or {}).items():
        text = text.replace(f"${{{key}}}", value)
    return json.loads(re.sub(r"\$\{[A-Za-z0-9_]+\}", "1", text)), placeholders


def test_every_placeholder_is_a_declared_substitution_and_every_substitution_is_used():
    _, placeholders = definition()
    properties = template()["Resources"]["TrainingStateMachine"]["Properties"]

    assert properties["DefinitionUri"] == "statemachines/training.asl.json"
    assert set(properties["DefinitionSubstitutions"]) == placeholders
    assert properties["Type"] == "STANDARD"
    assert properties["Tracing"] == {"Enabled": True}
    assert properties["DefinitionSubstitutions"]["TrainingWorkflowTimeoutSeconds"] == {
        "Ref": "TrainingWorkflowTimeoutSeconds"
    }
    assert definition({"TrainingWorkflowTimeoutSeconds": "77"})[0]["TimeoutSeconds"] == 77


def test_every_task_is_bounded_writes_its_own_result_and_catches_into_a_compensation_state():
    states = definition()[0]["States"]
    tasks = {state_name: state for state_name, state in states.items() if state["Type"] == "Task"}

    assert len(tasks) == 10
    for state_name, task in tasks.items():
        assert task.get("TimeoutSeconds") or task.get("TimeoutSecondsPath"), state_name
        assert "ResultPath" in task, state_name
        assert task["ResultPath"] != "$", state_name
        assert any("States.ALL" in catch["ErrorEquals"] for catch in task["Catch"]), state_name
    targets = {catch["Next"] for task in tasks.values() for catch in task["Catch"]}
    assert targets == {
        "Mark job failed",
        "Stop training job",
        "No checkpoint to resume from",
        "Training quota exceeded",
        "Approval timed out",
        "Failure not recorded",
    }
    # Once a training job may exist, a failure stops it first.
    for state_name in ("Check checkpoint and start attempt", "Describe training job", "Record attempt outcome"):
        assert tasks[state_name]["Catch"][-1]["Next"] == "Stop training job", state_name
    assert tasks["Stop training job"]["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:stopTrainingJob"
    assert tasks["Wait for an operator's approval"]["Parameters"]["Payload"]["kind"] == "training"
    assert all(re.fullmatch(r"[A-Z][a-z]+( [a-z']+)*\??", state_name) for state_name in states), "sentence names"


def test_task_timeouts_cover_their_functions_timeouts():
    parsed = template()
    resources, globals_timeout = parsed["Resources"], parsed["Globals"]["Function"]["Timeout"]
    substitutions = resources["TrainingStateMachine"]["Properties"]["DefinitionSubstitutions"]
    functions = {key: value["Fn::GetAtt"][0] for key, value in substitutions.items() if "Fn::GetAtt" in value}
    states = definition({key: key for key in functions})[0]["States"]
    checked = 0
    for state_name, state in states.items():
        function_key = state.get("Parameters", {}).get("FunctionName")
        if function_key is None or state["Resource"].endswith(".waitForTaskToken"):
            continue
        timeout = resources[functions[function_key]]["Properties"].get("Timeout", globals_timeout)
        assert state["TimeoutSeconds"] >= timeout, state_name
        checked += 1
    assert checked == 7


def test_the_poll_loop_outlasts_the_longest_spot_wait_and_stays_below_the_history_limit_at_the_defaults():
    parameters = template()["Parameters"]

    def default(name: str) -> float:
        return float(parameters[name]["Default"])

    polled = default("TrainingMaxPolls") * default("TrainingPollMaxSeconds")
    assert polled > 2 * default("TrainingMaxRuntimeSeconds")
    # About 14 history events per status check; 25,000 per execution.
    assert (
        float(parameters["TrainingMaxPolls"]["MaxValue"]) * float(parameters["TrainingMaxAttempts"]["MaxValue"]) * 14
        < 25_000
    )
    approval = default("ApprovalTimeoutHours") * 3600
    attempts = default("TrainingMaxAttempts") * (polled + default("TrainingRetryWaitSeconds"))
    assert default("TrainingWorkflowTimeoutSeconds") > approval + attempts


def test_only_the_attempt_step_creates_training_jobs_and_passes_only_the_training_role_to_sagemaker():
    resources = template()["Resources"]

    def statements(name: str) -> list[dict]:
        return [
            s
            for p in resources[name]["Properties"].get("Policies", [])
            if isinstance(p, dict)
            for s in p.get("Statement", [])
            if "Action" in s
        ]

    creators = [
        name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
        and "sagemaker:CreateTrainingJob" in json.dumps(statements(name))
    ]
    assert creators == ["TrainingAttemptFunction"]
    [passing] = [s for s in statements("TrainingAttemptFunction") if s["Action"] == "iam:PassRole"]
    assert passing["Resource"] == {"Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]}
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    for name in ("TrainingAttemptFunction", "TrainingStateMachine", "ApiFunction", "JobReaperFunction"):
        for statement in statements(name):
            if "TrainingJob" in json.dumps(statement["Action"]):
                assert statement["Resource"]["Fn::Sub"].endswith(":training-job/job-*"), name
    role = resources["SageMakerTrainingRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["SLUICE_TRAINING_STATE_MACHINE_ARN"] == {"Ref": "TrainingStateMachine"}
    assert variables["SLUICE_TRAINING_ROLE_ARN"] == {"Fn::GetAtt": ["SageMakerTrainingRole", "Arn"]}
    attempt = resources["TrainingAttemptFunction"]["Properties"]["Environment"]["Variables"]
    for setting, parameter in (
        ("SLUICE_TRAINING_BILLABLE_SECONDS_BUDGET", "TrainingBillableSecondsBudget"),
        ("SLUICE_TRAINING_SPOT_FAILURES_BEFORE_ON_DEMAND", "TrainingSpotFailuresBeforeOnDemand"),
        ("SLUICE_TRAINING_FROM_ZERO_RESTART", "TrainingFromZeroRestart"),
    ):
        assert attempt[setting] == {"Ref": parameter}
