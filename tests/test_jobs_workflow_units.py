"""The job workflows' decisions and contracts, without a stack: failure classification, instance
approval, transform job names, failure reasons, the completion event, and the ASL files against template.yaml
(every Task bounded and caught, every substitution declared, retried error names as raised)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from samtranslator.yaml_helper import yaml_parse

from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.kinds.async_inference.runner import TRANSIENT_ERRORS
from sluice.jobs.kinds.batch_transform.models import BatchExecutionInput
from sluice.jobs.kinds.batch_transform.policy import (
    classify_transform_failure,
    instance_approval,
    transform_name_prefix,
    transform_plan,
)
from sluice.jobs.models import Callback, Job, JobKind, JobStatus
from sluice.jobs.notify import completion_event
from sluice.jobs.status import MAX_REASON_CHARS, StatusUpdate, failure_reason, record_status
from tests.conftest import EVENTS, ROOT, load_event, load_handler

STATEMACHINES = ROOT / "statemachines"
WITHOUT_APPROVAL = ("ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge", "ml.g4dn.xlarge")


# ---------------------------------------------------------------------- batch decisions
@pytest.mark.parametrize(
    ("reason", "category", "transient"),
    [
        ("CapacityError: Unable to provision requested ML compute capacity.", "capacity", True),
        ("InsufficientCapacityError: not enough ml.p3.2xlarge capacity", "capacity", True),
        ("InternalServerError: We encountered an internal error. Please try again.", "internal", True),
        ("ThrottlingException: Rate exceeded", "throttling", True),
        (
            "ClientError: An error occurred (ThrottlingException) when calling GetObject: Rate exceeded",
            "throttling",
            True,
        ),
        ("ClientError: See job logs for more information", "client", False),
        ("AlgorithmError: the model raised ValueError", "client", False),
        ("ResourceLimitExceeded: The account-level service limit for ml.p3.2xlarge is 0", "quota", False),
        ("Something nobody has seen before", "client", False),
        ("", "client", False),
    ],
)
def test_transform_failures_are_transient_only_when_a_new_attempt_can_succeed(reason, category, transient):
    classification = classify_transform_failure(reason, "ml.p3.2xlarge")
    assert (classification.category, classification.transient) == (category, transient)


def test_a_quota_failure_says_what_to_do():
    classification = classify_transform_failure("ResourceLimitExceeded: limit is 0 Instances", "ml.p3.2xlarge")
    assert classification.reason.startswith("ResourceLimitExceeded: limit is 0 Instances - ")
    assert "quota increase for ml.p3.2xlarge" in classification.reason
    assert "smaller instance type" in classification.reason


def test_instance_types_on_the_list_need_no_approval():
    decision = instance_approval("ml.g4dn.xlarge", 2, WITHOUT_APPROVAL)
    assert not decision.needs_approval
    assert decision.reason == "ml.g4dn.xlarge needs no approval."


def test_larger_instance_types_wait_for_an_operator_whatever_the_caller_says():
    decision = instance_approval("ml.p4d.24xlarge", 10, WITHOUT_APPROVAL)
    assert decision.needs_approval
    assert decision.reason.startswith("10 x ml.p4d.24xlarge needs an operator's approval (only ml.m5.large, ")


def test_transform_job_names_are_valid_sagemaker_names_and_distinct_per_job():
    assert transform_name_prefix("job-0f3c9a7e2b1d4c5a8e6f7a9b0c1d2e3f") == "job-0f3c9a7e2b1d4c5a8e6f7a9b0c1d2e3f"
    odd = transform_name_prefix("team_risk/2026:11:23")
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,55}", odd)
    assert odd != transform_name_prefix("team_risk/2026:11:24")
    long = transform_name_prefix("x" * 200)
    assert len(long) <= 56
    assert len(f"{long}-10") <= 63


def test_the_sample_batch_input_plans_a_joined_transform_job():
    plan = transform_plan(
        BatchExecutionInput.model_validate_json((STATEMACHINES / "batch_transform.input.json").read_text())
    )
    assert plan.join_source == "Input"
    assert plan.input_uri == "s3://sluice-data-123456789012-us-east-1/uploads/team-risk/2026-11-23/"
    assert plan.input_data_type == "S3Prefix"
    assert (plan.content_type, plan.accept, plan.split_type, plan.max_payload_mb) == ("text/csv", "text/csv", "Line", 6)


def test_batch_policy_sample_events_give_decisions(lambda_context):
    handler = load_handler("batch_policy").lambda_handler
    decision = handler(load_event("batch_policy/instance-approval.json"), lambda_context)
    assert decision["needs_approval"] is True
    assert decision["timeout_seconds"] == 24 * 3600  # ApprovalTimeoutHours' default
    assert decision["transform"]["name_prefix"] == "01JD7QB2W4X6Y8Z0A1B2C3D4EF"
    classification = handler(load_event("batch_policy/transform-failure.json"), lambda_context)
    assert classification == {
        "transient": True,
        "category": "capacity",
        "reason": load_event("batch_policy/transform-failure.json")["failure_reason"],
    }


# ---------------------------------------------------------------------- failure reasons and status records
def test_a_lambda_errors_message_becomes_the_reason_without_its_stack_trace():
    kind, reason = failure_reason(load_event("job_status/mark-failed.json")["error"])
    assert kind == "ModelFailed"
    assert reason == "The model returned an error: input has 3 features, expected 4"


def test_plain_causes_timeouts_and_long_messages_give_bounded_reasons():
    assert failure_reason({"Error": "InputEmpty", "Cause": "No input objects under s3://b/p/"}) == (
        "InputEmpty",
        "No input objects under s3://b/p/",
    )
    assert failure_reason({"Error": "States.Timeout"})[1] == "The step did not finish within its time limit."
    assert len(failure_reason({"Error": "X", "Cause": "y" * 10_000})[1]) == MAX_REASON_CHARS


def test_job_status_sample_events_record_forward_only(aws):
    from sluice.jobs.store import JobStore
    from tests.conftest import shared_client

    dynamodb = shared_client("dynamodb")
    dynamodb.create_table(
        TableName="jobs",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
    )
    store = JobStore(dynamodb, "jobs")
    job_id = load_event("job_status/mark-running.json")["job_id"]
    store.create(Job(job_id=job_id, caller="team-risk", kind=JobKind.ASYNC, model="iris", input_location="s3://b/k"))

    running = record_status(store, StatusUpdate.model_validate(load_event("job_status/mark-running.json")))
    assert (running.status, running.changed, running.applied) == (JobStatus.RUNNING, True, True)
    done = record_status(store, StatusUpdate.model_validate(load_event("job_status/mark-succeeded.json")))
    assert (done.status, done.applied) == (JobStatus.SUCCEEDED, True)
    late = record_status(store, StatusUpdate.model_validate(load_event("job_status/mark-failed.json")))
    assert (late.status, late.changed, late.applied) == (JobStatus.SUCCEEDED, False, False)
    again = record_status(store, StatusUpdate.model_validate(load_event("job_status/mark-succeeded.json")))
    assert (again.changed, again.applied) == (False, True)  # a retried step goes on
    record_status(store, StatusUpdate.model_validate(load_event("job_status/record-notification-failure.json")))
    job = store.get(job_id)
    assert job.details["variant"] == "v1"  # details are merged, not replaced
    assert job.details["notification"] == {
        "delivered": False,
        "error": "CallbackFailed",
        "reason": "Webhook https://hooks.example.com/sluice/jobs answered 503.",
    }


# ---------------------------------------------------------------------- notifications
def finished_job(callback: Callback | None) -> Job:
    return Job(
        job_id="job-1",
        caller="team-risk",
        kind=JobKind.ASYNC,
        model="iris",
        status=JobStatus.SUCCEEDED,
        input_location="s3://b/async/team-risk/job-1/input",
        output_location="s3://b/async/team-risk/job-1/output",
        callback=callback,
        expires_at=1,
        execution_id="arn:aws:states:us-east-1:123456789012:execution:x:job-1",
    )


def test_the_completion_event_is_the_jobs_public_view():
    event = completion_event(finished_job(Callback(webhook_url="https://hooks.example.com/x")))
    assert event["type"] == "sluice.job.finished"
    assert event["job"]["status"] == "SUCCEEDED"
    assert {"callback", "expires_at", "execution_id"}.isdisjoint(event["job"])


def test_the_announcer_decides_final_transitions_itself_and_the_template_filter_agrees():
    """The event source mapping's filter is an optimisation: the domain rule and the filter (applied
    by local mode's stream delivery, as Lambda does) agree on every sample record."""
    from sluice.jobs.announcer import is_final_transition
    from sluice_local.streams import matches_pattern

    event = template()["Resources"]["JobAnnouncerFunction"]["Properties"]["Events"]["JobBecameFinal"]
    patterns = [json.loads(entry["Pattern"]) for entry in event["Properties"]["FilterCriteria"]["Filters"]]
    samples = (
        load_event("job_announcer/job-succeeded.json")["Records"]
        + load_event("job_announcer/not-final.json")["Records"]
    )
    created_final = copy.deepcopy(samples[1])
    created_final["dynamodb"]["NewImage"]["status"] = {"S": "FAILED"}  # a rejected drop
    removed = copy.deepcopy(samples[0])
    removed["eventName"] = "REMOVE"  # TTL
    cases = [(samples[0], True), (samples[1], False), (samples[2], False), (created_final, True), (removed, False)]
    for record, final in cases:
        change = record["dynamodb"]
        assert is_final_transition(record["eventName"], change.get("OldImage"), change.get("NewImage")) is final
        assert any(matches_pattern(pattern, record) for pattern in patterns) is final


# ---------------------------------------------------------------------- the ASL files and template.yaml
def template() -> dict:
    return yaml_parse((ROOT / "template.yaml").read_text())


def definition(name: str) -> tuple[dict, set[str]]:
    text = (STATEMACHINES / f"{name}.asl.json").read_text()
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text))
    return json.loads(re.sub(r"\$\{[A-Za-z0-9_]+\}", "1", text)), placeholders


MACHINES = {
    "async_inference": "AsyncInferenceStateMachine",
    "batch_transform": "BatchTransformStateMachine",
    "training": "TrainingStateMachine",
    "deployment": "DeploymentStateMachine",
}


@pytest.mark.parametrize(("name", "logical_id"), MACHINES.items())
def test_every_placeholder_is_a_declared_substitution_and_every_substitution_is_used(name, logical_id):
    _, placeholders = definition(name)
    properties = template()["Resources"][logical_id]["Properties"]
    assert properties["DefinitionUri"] == f"statemachines/{name}.asl.json"
    assert set(properties["DefinitionSubstitutions"]) == placeholders
    assert properties["Type"] == "STANDARD"


@pytest.mark.parametrize("name", MACHINES)
def test_every_task_is_bounded_writes_its_own_result_and_catches_its_failures(name):
    states = definition(name)[0]["States"]
    tasks = {state_name: state for state_name, state in states.items() if state["Type"] == "Task"}
    assert tasks
    for state_name, task in tasks.items():
        # A wait for an operator is bounded by ApprovalTimeoutHours, in seconds computed at run time.
        assert task.get("TimeoutSeconds") or task.get("TimeoutSecondsPath"), state_name
        assert "ResultPath" in task, state_name
        assert task["ResultPath"] != "$", state_name
        catches = task.get("Catch", [])
        assert any("States.ALL" in catch["ErrorEquals"] for catch in catches), state_name
    # Failures end in the named compensation state (announcing is the announcer's, not the workflows').
    targets = {catch["Next"] for task in tasks.values() for catch in task["Catch"]}
    assert targets <= {
        "Mark job failed",
        "Stop transform job",
        "Transform quota exceeded",
        "Approval timed out",
        "Failure not recorded",
        "Stop training job",
        "Training quota exceeded",
        "No checkpoint to resume from",
        # A deployment's failures roll its traffic back first; those that cannot still free the endpoint.
        "Roll back traffic",
        "Rollback failed",
        "Deployment rollback failed",
        "Record autoscaling failure",
        "Release endpoint after failure",
        "Release endpoint after failed rollback",
        "Endpoint not released",
    }
    assert all(re.fullmatch(r"[A-Z][a-z]+( [a-z0-9']+)*\??", state_name) for state_name in states), "sentence names"


@pytest.mark.parametrize(("name", "logical_id"), MACHINES.items())
def test_task_timeouts_cover_their_functions_timeouts(name, logical_id):
    """With the template's defaults substituted, each Lambda task waits at least its function's timeout."""
    parsed = template()
    resources, globals_timeout = parsed["Resources"], parsed["Globals"]["Function"]["Timeout"]
    defaults = {key: value.get("Default") for key, value in parsed["Parameters"].items()}
    text = (STATEMACHINES / f"{name}.asl.json").read_text()
    functions = {}
    for key, value in resources[logical_id]["Properties"]["DefinitionSubstitutions"].items():
        if "Fn::GetAtt" in value:
            functions[key] = value["Fn::GetAtt"][0]
            text = text.replace(f"${{{key}}}", key)
        else:
            text = text.replace(f"${{{key}}}", str(defaults[value["Ref"]]))
    lambda_tasks = 0
    for state_name, state in json.loads(text)["States"].items():
        function_key = state.get("Parameters", {}).get("FunctionName")
        if state["Type"] != "Task" or function_key is None:
            continue
        if state["Resource"].endswith(".waitForTaskToken"):
            # Waits for an operator (ApprovalTimeoutHours); the function itself only records the request.
            assert state["TimeoutSecondsPath"] in ("$.approval.timeout_seconds", "$.plan.timeout_seconds"), state_name
            continue
        lambda_tasks += 1
        timeout = resources[functions[function_key]]["Properties"].get("Timeout", globals_timeout)
        if isinstance(timeout, dict):
            timeout = defaults[timeout["Ref"]]
        assert state["TimeoutSeconds"] >= int(timeout), state_name
    assert lambda_tasks >= 4


def test_run_inference_retries_exactly_the_transient_errors_the_worker_raises():
    task = definition("async_inference")[0]["States"]["Run inference"]
    assert task["Retry"][0]["ErrorEquals"] == list(TRANSIENT_ERRORS)
    assert task["Retry"][0]["JitterStrategy"] == "FULL"
    assert all("ModelFailed" not in retrier["ErrorEquals"] for retrier in task["Retry"])
    assert all("ModelRejectedInput" not in retrier["ErrorEquals"] for retrier in task["Retry"])
    assert task["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Mark job failed"}]


def test_sample_inputs_are_valid_execution_inputs():
    AsyncExecutionInput.model_validate_json((STATEMACHINES / "async_inference.input.json").read_text())
    BatchExecutionInput.model_validate_json((STATEMACHINES / "batch_transform.input.json").read_text())
    assert load_event("async_worker/run-inference.json") == json.loads(
        (STATEMACHINES / "async_inference.input.json").read_text()
    )
    assert {path.parent.name for path in Path(EVENTS).glob("*/*.json")} >= {
        "job_status",
        "async_worker",
        "batch_policy",
        "job_announcer",
        "async_notifications",
        "approval_request",
    }


# ---------------------------------------------------------------------- approval requests
def test_the_approval_request_step_stores_the_token_and_marks_the_job_awaiting_approval(aws, lambda_context):
    from sluice.approvals.models import approval_id_for
    from sluice.approvals.store import ApprovalStore
    from sluice.jobs.store import JobStore
    from tests.conftest import shared_client
    from tests.jobs_support import APPROVALS_TABLE, JOBS_TABLE, create_approvals_table

    dynamodb = shared_client("dynamodb")
    dynamodb.create_table(
        TableName=JOBS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
    )
    create_approvals_table(dynamodb)
    request = load_event("approval_request/request-approval.json")
    jobs = JobStore(dynamodb, JOBS_TABLE)
    jobs.create(
        Job(job_id=request["job_id"], caller="team-risk", kind=JobKind.BATCH, model="m", input_location="s3://b/p/")
    )
    handler = load_handler("approval_request")
    handler.approvals = ApprovalStore(dynamodb, APPROVALS_TABLE)
    handler.jobs = jobs

    answer = handler.lambda_handler(request, lambda_context)

    approval_id = approval_id_for("batch", request["job_id"])
    assert answer["approval_id"] == approval_id
    stored = handler.approvals.get(approval_id)
    assert stored.task_token == request["task_token"]
    assert (stored.instance_type, stored.instance_count, stored.requested_by) == ("ml.p3.2xlarge", 2, "team-risk")
    job = jobs.get(request["job_id"])
    assert job.status == JobStatus.AWAITING_APPROVAL
    assert job.details["approval_id"] == approval_id
    # A retried step (new token) refreshes the pending request rather than failing.
    handler.lambda_handler({**request, "task_token": "another-token"}, lambda_context)
    assert handler.approvals.get(approval_id).task_token == "another-token"
    # A job cancelled before its approval was asked gets none.
    jobs.transition(request["job_id"], JobStatus.CANCELLED)
    with pytest.raises(Exception, match="no approval asked"):
        handler.lambda_handler({**request, "job_id": request["job_id"]}, lambda_context)


def test_the_transform_start_sample_is_what_the_workflow_sends_for_its_sample_input():
    from sluice.jobs.kinds.batch_transform.policy import transform_plan
    from sluice.jobs.kinds.batch_transform.transform_start import TransformStart

    sample = TransformStart.model_validate(load_event("transform_start/start-transform-job.json"))
    execution_input = BatchExecutionInput.model_validate(
        json.loads((ROOT / "statemachines" / "batch_transform.input.json").read_text())
    )

    assert sample.job_id == execution_input.job_id
    assert sample.transform == transform_plan(execution_input)
