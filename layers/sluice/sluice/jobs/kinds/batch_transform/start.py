"""Starting a batch job's state machine, with an input built from the job row alone."""

from __future__ import annotations

from sluice.jobs.kinds.batch_transform.models import BatchExecutionInput
from sluice.jobs.models import Job
from sluice.jobs.workflow_start import already_started, failing_on_error, start_execution
from sluice.settings import get_settings
from sluice.storage.keys import parse_s3_uri


def batch_execution_input(job: Job) -> BatchExecutionInput:
    """Built from the job row alone, so a retried start sends exactly the same input."""
    details = job.details
    # A dropped file is scored from its pinned copy, through a manifest naming only that copy.
    input_bucket, input_prefix = parse_s3_uri(details.get("pinned_input") or job.input_location)
    manifest = details.get("input_manifest")
    output_bucket, output_prefix = parse_s3_uri(job.output_location or "")
    return BatchExecutionInput(
        job_id=job.job_id,
        caller=job.caller,
        model=job.model,
        model_name=details["model_name"],
        input_bucket=input_bucket,
        input_prefix=input_prefix,
        input_manifest_key=parse_s3_uri(manifest)[1] if manifest else None,
        output_bucket=output_bucket,
        output_prefix=output_prefix,
        content_type=details["content_type"],
        accept=details.get("accept"),
        split_type=details["split_type"],
        instance_type=details["instance_type"],
        instance_count=details["instance_count"],
        join_with_input=details["join_with_input"],
        max_payload_mb=details["max_payload_mb"],
        callback=job.callback,
    )


def start_batch(job: Job, *, fail_job_on_error: bool = True) -> str:
    """`fail_job_on_error=False` leaves the job QUEUED so a retry (the drop queue's) can start it.

    Safe to repeat: a job whose execution is recorded is not started again (its ARN is returned)."""
    if job.execution_id:
        return job.execution_id
    if already_started(job):
        return ""
    settings = get_settings()
    execution_input = batch_execution_input(job)
    arn, setting = settings.batch_state_machine_arn, "SLUICE_BATCH_STATE_MACHINE_ARN"
    if not fail_job_on_error:
        return start_execution(job, arn, setting, execution_input)
    with failing_on_error(job, "stepfunctions"):
        return start_execution(job, arn, setting, execution_input)
