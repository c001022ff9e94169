"""statemachines/batch_transform.asl.json run by moto's interpreter, with the real handlers in-process.

moto's SageMaker is steered per transform job name (tests/workflow_support.TransformScript): a job
can report InProgress, Failed with a FailureReason, or Stopped, and CreateTransformJob can throttle.
"""

from __future__ import annotations

import json
import time

import pytest

from sluice.approvals.models import Approval, ApprovalStatus, approval_id_for
from sluice.approvals.store import ApprovalStore
from sluice.jobs.kinds.batch_transform.models import BatchExecutionInput
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.storage.keys import batch_output_prefix, s3_uri
from tests.api_support import event
from tests.conftest import load_handler
from tests.jobs_support import as_caller, for_path_id
from tests.workflow_support import (
    CALLER,
    history,
    jobs_stack,
    new_job_id,
    run_execution,
    start_execution,
    states_entered,
    wait_for_execution,
)

SUCCESS_TAIL = ["Job finished"]
TO_APPROVAL = ["Check input exists", "Input empty?", "Check instance approval", "Approval needed?"]
TO_RUNNING = [
    *TO_APPROVAL,
    "Mark job running",
    "Job still wanted?",
    "Count first attempt",
]
ONE_ATTEMPT = [
    "Start transform job",
    "Transform job still wanted?",
    "Start polling",
    "Wait for job",
    "Describe transform job",
    "Transform job status?",
]


@pytest.fixture(scope="module")
def stack():
    with jobs_stack("sluice-batch-flow", {"version": 1, "models": {}}) as deployed:
        yield deployed


def submit(
    stack, *, files: int = 2, instance_type: str = "ml.m5.large", status: JobStatus | None = None, **fields
) -> BatchExecutionInput:
    """What batch submission does: the job record, then the execution input (inputs already uploaded)."""
    job_id = new_job_id()
    input_prefix = f"uploads/{CALLER}/{job_id}/"  # the caller's own prefix (batch-input/ would start a drop job)
    for index in range(files):
        stack.client("s3").put_object(Bucket=stack.bucket, Key=f"{input_prefix}part-{index}.csv", Body=b"1,2\n3,4\n")
    execution_input = BatchExecutionInput(
        job_id=job_id,
        caller=CALLER,
        model="fraud-batch",
        model_name="fraud-scorer-v7",
        input_bucket=stack.bucket,
        input_prefix=input_prefix,
        output_bucket=stack.bucket,
        output_prefix=batch_output_prefix(CALLER, job_id),
        content_type="text/csv",
        instance_type=instance_type,
        instance_count=1,
        **fields,
    )
    stack.store().create(
        Job(
            job_id=job_id,
            caller=CALLER,
            kind=JobKind.BATCH,
            model="fraud-batch",
            input_location=s3_uri(stack.bucket, input_prefix),
            details={"instance_type": instance_type},
            # As the API creates it: a job whose type needs an approval says so from the start.
            status=status or initial_status(stack, instance_type),
        )
    )
    return execution_input


def initial_status(stack, instance_type: str) -> JobStatus:
    from sluice.jobs.kinds.batch_transform.submit import initial_status as api_rule

    return api_rule(instance_type)


def start(stack, execution_input: BatchExecutionInput) -> str:
    return start_execution(
        stack, "BatchTransformStateMachineArn", execution_input.model_dump(mode="json", exclude_none=True)
    )


def pending_approval(stack, job_id: str, timeout: float = 10) -> Approval:
    """The request "Wait for an operator's approval" recorded (with its task token)."""
    approvals = ApprovalStore(stack.client("dynamodb"), stack.deployment.outputs["ApprovalsTableName"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        approval = approvals.get(approval_id_for("batch", job_id))
        if approval is not None:
            return approval
        time.sleep(0.05)
    raise AssertionError(f"no approval requested for {job_id}")


def call_api(lambda_context, evt: dict) -> dict:
    return load_handler("api").lambda_handler(evt, lambda_context)


def decide(stack, lambda_context, decision: str, approval_id: str, reason: str) -> dict:
    """An operator (tenant platform) decides through the API, as POST /v1/approvals/{id}/approve|deny."""
    evt = for_path_id(event(f"approval-{decision}", body={"reason": reason}), "approval_id", approval_id)
    return call_api(lambda_context, evt)


def run(stack, execution_input: BatchExecutionInput) -> dict:
    # As the API starts it: optional fields left out when empty.
    return run_execution(
        stack, "BatchTransformStateMachineArn", execution_input.model_dump(mode="json", exclude_none=True)
    )


def created_for(stack, job_id: str) -> list[dict]:
    return [job for job in stack.transforms.created if job["TransformJobName"].startswith(job_id)]


def test_happy_path_the_transform_job_completes_and_the_job_records_its_output(stack):
    execution_input = submit(stack)
    # Still running at the first look: the workflow waits and looks again.
    stack.transforms.statuses[f"{execution_input.job_id}-1"] = [("InProgress", ""), ("Completed", "")]
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == [
        *TO_RUNNING,
        *ONE_ATTEMPT,
        "Count status check",
        "Poll limit reached?",
        "Wait for job",
        "Describe transform job",
        "Transform job status?",
        "Record output",
        *SUCCESS_TAIL,
    ]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.output_location == s3_uri(stack.bucket, execution_input.output_prefix)
    assert job.details["transform_job_name"] == f"{job.job_id}-1"
    assert job.details["attempts"] == 1
    assert job.details["instance_type"] == "ml.m5.large"
    # No operator was asked: the type needs no approval.
    assert "approval" not in job.details
    assert "approval_id" not in job.details

    [created] = created_for(stack, job.job_id)
    assert created["model_name"] == "fraud-scorer-v7"
    assert created["batch_strategy"] == "MultiRecord"
    assert created["max_payload_in_mb"] == 6
    assert created["transform_input"] == {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": s3_uri(stack.bucket, execution_input.input_prefix)}
        },
        "ContentType": "text/csv",
        "SplitType": "Line",
    }
    assert created["transform_output"] == {
        "S3OutputPath": job.output_location,
        "AssembleWith": "Line",
        "Accept": "text/csv",
    }
    assert created["transform_resources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    assert created["data_processing"] == {"InputFilter": "$", "JoinSource": "None", "OutputFilter": "$"}
    assert {"Key": "sluice:job-id", "Value": job.job_id} in created["tags"]

    [event] = stack.job_events(job.job_id, wait=2)
    assert event["job"]["status"] == "SUCCEEDED"
    assert event["job"]["kind"] == "batch"


def test_catch_path_an_empty_input_prefix_fails_the_job_before_anything_runs(stack):
    execution_input = submit(stack, files=0)
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    path = states_entered(stack, execution["executionArn"])
    assert path[:4] == ["Check input exists", "Input empty?", "Input prefix is empty", "Mark job failed"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith(
        f"No input objects under s3://{stack.bucket}/{execution_input.input_prefix} - upload the files"
    )
    assert job.details["failure_type"] == "InputEmpty"
    assert created_for(stack, job.job_id) == []


def test_approval_path_an_operator_approves_and_the_transform_job_runs(stack, lambda_context):
    execution_input = submit(stack, instance_type="ml.p3.2xlarge", join_with_input=True)
    job_id = execution_input.job_id
    execution_arn = start(stack, execution_input)

    approval = pending_approval(stack, job_id)
    # Waiting: nothing runs (and nothing bills) before an operator decides.
    assert stack.store().get(job_id).status == JobStatus.AWAITING_APPROVAL
    assert stack.store().get(job_id).details["approval_id"] == approval.approval_id
    assert created_for(stack, job_id) == []
    assert approval.task_token
    assert (approval.instance_type, approval.instance_count, approval.requested_by) == ("ml.p3.2xlarge", 1, CALLER)
    response = decide(stack, lambda_context, "approve", approval.approval_id, "Month-end run, FIN-2211")
    assert response["statusCode"] == 200, response["body"]
    execution = wait_for_execution(stack, execution_arn)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution_arn) == [
        *TO_APPROVAL,
        "Wait for an operator's approval",
        *TO_RUNNING[4:],
        *ONE_ATTEMPT,
        "Record output",
        *SUCCESS_TAIL,
    ]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["approval"]["decision"] == "approved"
    assert job.details["approval"]["by"] == "platform"
    assert job.details["approval"]["reason"] == "Month-end run, FIN-2211"
    [created] = created_for(stack, job_id)
    assert created["transform_resources"]["InstanceType"] == "ml.p3.2xlarge"
    assert created["data_processing"] == {"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"}


def test_approval_path_an_operator_denies_and_the_job_fails_with_the_reason(stack, lambda_context):
    # Created QUEUED (as a dropped file's job is): the request step moves it to AWAITING_APPROVAL.
    execution_input = submit(stack, instance_type="ml.g5.2xlarge", status=JobStatus.QUEUED)
    job_id = execution_input.job_id
    execution_arn = start(stack, execution_input)

    approval = pending_approval(stack, job_id)
    assert stack.store().get(job_id).status == JobStatus.AWAITING_APPROVAL
    decide(stack, lambda_context, "deny", approval.approval_id, "ml.m5.xlarge is enough for this model")
    assert wait_for_execution(stack, execution_arn)["status"] == "SUCCEEDED"

    path = states_entered(stack, execution_arn)
    assert path[len(TO_APPROVAL) :][:2] == ["Wait for an operator's approval", "Mark job failed"]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason == "Instance approval denied by platform: ml.m5.xlarge is enough for this model"
    assert job.details["failure_type"] == "ApprovalDenied"
    assert job.details["approval"]["decision"] == "denied"
    assert created_for(stack, job_id) == []
    [event] = stack.job_events(job_id, wait=2)
    assert event["job"]["status"] == "FAILED"


def test_timeout_path_a_self_attested_p4d_waits_then_fails_with_approval_timed_out(stack, lambda_context):
    execution_input = submit(stack, instance_type="ml.p4d.24xlarge")
    job_id = execution_input.job_id
    # What the old API passed through: the caller's own word. The workflow no longer reads it.
    raw = {**execution_input.model_dump(mode="json", exclude_none=True), "approved_by": "me@example.com"}
    execution_arn = start_execution(stack, "BatchTransformStateMachineArn", raw)

    approval = pending_approval(stack, job_id)
    assert wait_for_execution(stack, execution_arn, timeout=30)["status"] == "SUCCEEDED"

    path = states_entered(stack, execution_arn)
    assert path[len(TO_APPROVAL) :][:3] == ["Wait for an operator's approval", "Approval timed out", "Mark job failed"]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert "approval timed out" in job.failure_reason.lower()
    assert "1 x ml.p4d.24xlarge" in job.failure_reason
    assert job.details["failure_type"] == "ApprovalTimedOut"
    assert created_for(stack, job_id) == []
    # Nobody can approve it any more, and it is not listed as pending.
    listed = call_api(lambda_context, event("approvals-list"))
    assert approval.approval_id not in {item["id"] for item in json.loads(listed["body"])["data"]}
    late = decide(stack, lambda_context, "approve", approval.approval_id, "sorry, was on holiday")
    assert late["statusCode"] == 409
    assert json.loads(late["body"])["error"]["code"] == "approval_closed"


def test_cancel_path_a_job_cancelled_while_awaiting_approval_never_runs(stack, lambda_context):
    execution_input = submit(stack, instance_type="ml.p3.2xlarge")
    job_id = execution_input.job_id
    execution_arn = start(stack, execution_input)
    approval = pending_approval(stack, job_id)
    stack.store().update_details(job_id, execution_id=execution_arn)

    cancel = for_path_id(as_caller(event("job-cancel"), CALLER), "job_id", job_id)
    response = call_api(lambda_context, cancel)

    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["status"] == "CANCELLED"
    execution = wait_for_execution(stack, execution_arn)
    # Stopped while it waited: nothing after the wait ran (AWS reports ABORTED; moto 5.2.5 ends a
    # stopped callback wait as FAILED with States.Timeout, without running the Catch).
    assert execution["status"] in {"ABORTED", "FAILED"}
    assert states_entered(stack, execution_arn)[-1] == "Wait for an operator's approval"
    approvals = ApprovalStore(stack.client("dynamodb"), stack.deployment.outputs["ApprovalsTableName"])
    assert approvals.get(approval.approval_id).status == ApprovalStatus.WITHDRAWN
    late = decide(stack, lambda_context, "approve", approval.approval_id, "go")
    assert late["statusCode"] == 409
    assert stack.store().get(job_id).status == JobStatus.CANCELLED
    assert created_for(stack, job_id) == []


def test_retry_path_a_transient_transform_failure_is_retried_under_a_new_job_name(stack):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    capacity = (
        "CapacityError: Unable to provision requested ML compute capacity. "
        "Please retry using a different ML instance type."
    )
    stack.transforms.statuses[f"{job_id}-1"] = [("Failed", capacity)]
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"]) == [
        *TO_RUNNING,
        *ONE_ATTEMPT,
        "Read failure reason",
        "Classify failure",
        "Retry the transform job?",
        "Wait before next attempt",
        "Count next attempt",
        *ONE_ATTEMPT,
        "Record output",
        *SUCCESS_TAIL,
    ]
    assert [job["TransformJobName"] for job in created_for(stack, job_id)] == [f"{job_id}-1", f"{job_id}-2"]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["transform_job_name"] == f"{job_id}-2"
    assert job.details["attempts"] == 2


def test_catch_path_a_client_failure_fails_the_job_with_sagemakers_reason_without_retry(stack):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    reason = "ClientError: See job logs for more information. Line 1 of part-0.csv has 2 columns, the model expects 4."
    stack.transforms.statuses[f"{job_id}-1"] = [("Failed", reason)]
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-6:] == [
        "Read failure reason",
        "Classify failure",
        "Retry the transform job?",
        "Transform job failed",
        "Mark job failed",
        "Job finished",
    ]
    assert path.count("Start transform job") == 1
    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason == reason
    assert job.details["failure_type"] == "TransformJobFailed"
    assert len(created_for(stack, job_id)) == 1
    [event] = stack.job_events(job_id, wait=2)
    assert event["job"]["failure_reason"] == reason


def test_retry_path_exhausted_attempts_fail_the_job_with_the_last_reason(stack):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    for attempt in (1, 2, 3):
        stack.transforms.statuses[f"{job_id}-{attempt}"] = [
            ("Failed", f"InternalServerError: We encountered an internal error (attempt {attempt}). Please try again.")
        ]
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    # TransformMaxAttempts (3) transform jobs, each under its own name.
    assert [job["TransformJobName"] for job in created_for(stack, job_id)] == [f"{job_id}-{n}" for n in (1, 2, 3)]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith("InternalServerError: We encountered an internal error (attempt 3)")
    assert job.details["attempts"] == 3


def test_retry_path_a_throttled_create_call_is_retried_by_the_task(stack):
    execution_input = submit(stack)
    job_id = execution_input.job_id
    stack.transforms.create_errors[job_id] = [("ThrottlingException", "Rate exceeded")]
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    path = states_entered(stack, execution["executionArn"])
    assert path.count("Start transform job") == 1  # retried within the task, not a new attempt
    failures = [
        event["taskFailedEventDetails"]
        for event in history(stack, execution["executionArn"])
        if "taskFailedEventDetails" in event
    ]
    assert [failure["error"] for failure in failures] == ["TransformApiThrottled"]
    assert "Rate exceeded" in failures[0]["cause"]
    job = stack.store().get(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["transform_job_name"] == f"{job_id}-1"


def test_catch_path_an_exhausted_quota_fails_the_job_saying_what_to_do(stack):
    execution_input = submit(stack, instance_type="ml.g4dn.xlarge")
    job_id = execution_input.job_id
    stack.transforms.create_errors[job_id] = [
        (
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.g4dn.xlarge for transform job usage' is 0 Instances",
        )
    ]
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert "Transform quota exceeded" in path
    job = stack.store().get(job_id)
    assert job.status == JobStatus.FAILED
    assert "1 x ml.g4dn.xlarge" in job.failure_reason
    assert "Request a quota increase" in job.failure_reason
    assert "account-level service limit" in job.failure_reason
    assert created_for(stack, job_id) == []


def test_cancel_path_a_stopped_transform_job_ends_the_job_cancelled(stack):
    execution_input = submit(stack)
    stack.transforms.statuses[f"{execution_input.job_id}-1"] = [("Stopped", "")]
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"])[-2:] == ["Mark job cancelled", *SUCCESS_TAIL]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.CANCELLED
    assert job.details["transform_job_name"] == f"{job.job_id}-1"


def test_a_dropped_file_is_scored_through_its_manifest_not_as_a_prefix(stack):
    """A drop's execution input names a manifest: the transform job reads ManifestFile, not S3Prefix."""
    job_id = new_job_id()
    pinned = f"batch-pinned/{CALLER}/{job_id}/input/"
    manifest_key = f"batch-pinned/{CALLER}/{job_id}/manifest.json"
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.bucket, Key=f"{pinned}rows.csv", Body=b"1,2\n")
    s3.put_object(Bucket=stack.bucket, Key=manifest_key, Body=b'[{"prefix": "s3://b/x/"}, "rows.csv"]')
    execution_input = submit(stack, files=0)
    execution_input = execution_input.model_copy(
        update={"job_id": job_id, "input_prefix": f"{pinned}rows.csv", "input_manifest_key": manifest_key}
    )
    stack.store().create(
        Job(job_id=job_id, caller=CALLER, kind=JobKind.BATCH, model="fraud-batch", input_location="s3://b/k")
    )
    stack.transforms.statuses[f"{job_id}-1"] = [("Completed", "")]

    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    assert states_entered(stack, execution["executionArn"])[:8] == [*TO_RUNNING, "Start transform job"]
    [created] = created_for(stack, job_id)
    assert created["transform_input"]["DataSource"] == {
        "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": s3_uri(stack.bucket, manifest_key)}
    }
    assert stack.store().get(job_id).status == JobStatus.SUCCEEDED
