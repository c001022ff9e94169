"""Starting a created job's work: a SageMaker async invocation or a Step Functions execution.

The job row always exists first (the state machine and the SageMaker notifications update it). An
execution is named after its job, so starting one twice is harmless: Step Functions returns the same
execution for the same name and input, and a retried start after a crash finds it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.catalog.models import ModelEntry, SageMakerBackend
from sluice.errors import BackendMisconfigured, SluiceError
from sluice.jobs import services
from sluice.jobs.models import AsyncExecutionInput, BatchExecutionInput, Job, JobStatus
from sluice.providers.errors import from_client_error, translate_errors
from sluice.settings import get_settings
from sluice.storage.keys import async_output_key, parse_s3_uri
from sluice.telemetry import logger


def new_job_id() -> str:
    return f"job-{secrets.token_hex(16)}"


def execution_arn(state_machine_arn: str, name: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


def uses_native_async(entry: ModelEntry) -> bool:
    return isinstance(entry.backend, SageMakerBackend) and entry.backend.async_endpoint


def start_async(job: Job, entry: ModelEntry) -> None:
    """InvokeEndpointAsync for a SageMaker async endpoint, the async state machine for any other backend."""
    content_type = job.details["content_type"]
    backend = entry.backend
    if isinstance(backend, SageMakerBackend) and backend.async_endpoint:
        with _failing(job, "sagemaker"), translate_errors("sagemaker"):
            answer = services.sagemaker_runtime().invoke_endpoint_async(
                EndpointName=backend.endpoint_name,
                InputLocation=job.input_location,
                InferenceId=job.job_id,
                ContentType=content_type,
                Accept=backend.accept,
            )
        store = services.store()
        # SageMaker chose the output's location; its SNS notifications finish the job (and may
        # already have: then the RUNNING move is refused and nothing recorded here is lost).
        store.update_details(job.job_id, execution_id=job.job_id, output_location=answer["OutputLocation"])
        if answer.get("FailureLocation"):
            store.merge_details(job.job_id, failure_location=answer["FailureLocation"])
        store.transition(job.job_id, JobStatus.RUNNING)
        return
    settings = get_settings()
    bucket, key = parse_s3_uri(job.input_location)
    execution_input = AsyncExecutionInput(
        job_id=job.job_id,
        caller=job.caller,
        model=job.model,
        input_bucket=bucket,
        input_key=key,
        output_bucket=settings.data_bucket,
        output_key=async_output_key(job.caller, job.job_id),
        content_type=content_type,
        callback=job.callback,
    )
    with _failing(job, "stepfunctions"):
        start_execution(job, settings.async_state_machine_arn, "SLUICE_ASYNC_STATE_MACHINE_ARN", execution_input)


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
    """`fail_job_on_error=False` leaves the job QUEUED so a retry (the drop queue's) can start it."""
    settings = get_settings()
    execution_input = batch_execution_input(job)
    if not fail_job_on_error:
        return start_execution(job, settings.batch_state_machine_arn, "SLUICE_BATCH_STATE_MACHINE_ARN", execution_input)
    with _failing(job, "stepfunctions"):
        return start_execution(job, settings.batch_state_machine_arn, "SLUICE_BATCH_STATE_MACHINE_ARN", execution_input)


def start_execution(job: Job, state_machine_arn: str, setting: str, execution_input: BaseModel) -> str:
    if not state_machine_arn:
        raise BackendMisconfigured(f"Jobs are not configured on this stack ({setting} is empty).")
    try:
        arn = services.stepfunctions().start_execution(
            stateMachineArn=state_machine_arn, name=job.job_id, input=execution_input.model_dump_json()
        )["executionArn"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
            raise from_client_error("stepfunctions", exc) from exc
        # Started by an earlier attempt (same name): that execution is this job's.
        arn = execution_arn(state_machine_arn, job.job_id)
    services.store().update_details(job.job_id, execution_id=arn)
    return arn


@contextmanager
def _failing(job: Job, service: str) -> Iterator[None]:
    """Marks the job FAILED with the reason when starting it fails, then lets the error through."""
    try:
        yield
    except Exception as error:
        reason = error.message if isinstance(error, SluiceError) else f"{type(error).__name__}: {error}"
        logger.error("job could not be started", extra={"job_id": job.job_id, "service": service, "reason": reason})
        services.store().transition(job.job_id, JobStatus.FAILED, failure_reason=f"Could not start: {reason}")
        raise
