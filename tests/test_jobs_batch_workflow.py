"""statemachines/batch_transform.asl.json run by moto's interpreter, with the real handlers in-process.

moto's SageMaker is steered per transform job name (tests/workflow_support.TransformScript): a job
can report InProgress, Failed with a FailureReason, or Stopped, and CreateTransformJob can throttle.
"""

from __future__ import annotations

import pytest

from sluice.jobs.models import BatchExecutionInput, Job, JobKind, JobStatus
from sluice.storage.keys import batch_output_prefix, s3_uri
from tests.workflow_support import CALLER, history, jobs_stack, new_job_id, run_execution, states_entered

SUCCESS_TAIL = ["Job finished by this run?", "Publish completion", "Callback requested?", "Job announced"]
TO_RUNNING = [
    "Check input exists",
    "Input empty?",
    "Enforce instance approval",
    "Instance approved?",
    "Mark job running",
    "Job still wanted?",
    "Count first attempt",
]
ONE_ATTEMPT = [
    "Start transform job",
    "Record transform job",
    "Wait for job",
    "Describe transform job",
    "Transform job status?",
]


@pytest.fixture(scope="module")
def stack():
    with jobs_stack("sluice-batch-flow", {"version": 1, "models": {}}) as deployed:
        yield deployed


def submit(stack, *, files: int = 2, instance_type: str = "ml.m5.large", **fields) -> BatchExecutionInput:
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
        )
    )
    return execution_input


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
    assert job.details["approval"] == "ml.m5.large needs no approval."

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


def test_catch_path_a_large_instance_without_approval_fails_the_job_with_the_reason(stack):
    execution_input = submit(stack, instance_type="ml.p3.2xlarge")
    execution = run(stack, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[2:6] == ["Enforce instance approval", "Instance approved?", "Instance not approved", "Mark job failed"]
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith("Instance type ml.p3.2xlarge needs an approval")
    assert "ml.g4dn.xlarge" in job.failure_reason
    assert "approved_by" in job.failure_reason
    assert job.details["failure_type"] == "InstanceNotApproved"
    assert created_for(stack, job.job_id) == []


def test_happy_path_an_approved_large_instance_runs_and_the_approval_is_recorded(stack):
    execution_input = submit(
        stack, instance_type="ml.p3.2xlarge", approved_by="jane.doe@example.com", join_with_input=True
    )
    execution = run(stack, execution_input)

    assert execution["status"] == "SUCCEEDED"
    job = stack.store().get(execution_input.job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["approved_by"] == "jane.doe@example.com"
    assert job.details["approval"] == "ml.p3.2xlarge approved by jane.doe@example.com."
    [created] = created_for(stack, job.job_id)
    assert created["transform_resources"]["InstanceType"] == "ml.p3.2xlarge"
    assert created["data_processing"] == {"InputFilter": "$", "JoinSource": "Input", "OutputFilter": "$"}


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
    assert path[-9:-5] == [
        "Read failure reason",
        "Classify failure",
        "Retry the transform job?",
        "Transform job failed",
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
    assert [failure["error"] for failure in failures] == ["SageMaker.AmazonSageMakerException"]
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
    assert states_entered(stack, execution["executionArn"])[-5:] == ["Mark job cancelled", *SUCCESS_TAIL]
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
