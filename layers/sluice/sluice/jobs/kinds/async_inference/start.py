"""Starting an async job: InvokeEndpointAsync for a SageMaker async endpoint, the async state machine
for any other backend."""

from __future__ import annotations

from sluice import clients
from sluice.catalog.models import ModelEntry, SageMakerBackend
from sluice.jobs import services
from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.models import Job, JobStatus, utc_now
from sluice.jobs.workflow_start import already_started, failing_on_error, start_execution
from sluice.providers.errors import translate_errors
from sluice.settings import get_settings
from sluice.storage.keys import async_output_key, parse_s3_uri

# details.runner: what runs the job (a native one's execution_id is its InferenceId, not an execution).
NATIVE_RUNNER = "sagemaker-async"
WORKFLOW_RUNNER = "state-machine"


def uses_native_async(entry: ModelEntry) -> bool:
    return isinstance(entry.backend, SageMakerBackend) and entry.backend.async_endpoint


def runner_of(entry: ModelEntry) -> str:
    return NATIVE_RUNNER if uses_native_async(entry) else WORKFLOW_RUNNER


# Set on the job before InvokeEndpointAsync: a repeated start (a retry after a crash) never invokes twice.
INVOCATION_CLAIM = "invocation_requested_at"


def start_async(job: Job, entry: ModelEntry) -> None:
    """Safe to repeat: a job already started (or moved on) is left as it is."""
    native = uses_native_async(entry)
    if native and job.execution_id and job.status == JobStatus.QUEUED:
        # An earlier attempt recorded SageMaker's answer and died before the move: finish that step.
        services.store().transition(job.job_id, JobStatus.RUNNING)
        return
    if already_started(job):
        return
    content_type = job.details["content_type"]
    backend = entry.backend
    if native and isinstance(backend, SageMakerBackend):
        # SageMaker has no idempotent InvokeEndpointAsync: the claim makes one attempt the invoker. An
        # attempt that dies between claim and call leaves the job QUEUED without an execution, which
        # the reaper fails; a second invocation (billed twice, answered twice) cannot happen.
        if (
            services.store().claim(
                job.job_id, statuses=(JobStatus.QUEUED,), unset=INVOCATION_CLAIM, **{INVOCATION_CLAIM: utc_now()}
            )
            is None
        ):
            return
        with failing_on_error(job, "sagemaker"), translate_errors("sagemaker"):
            answer = clients.get("sagemaker-runtime").invoke_endpoint_async(
                EndpointName=backend.endpoint_name,
                InputLocation=job.input_location,
                InferenceId=job.job_id,
                ContentType=content_type,
                Accept=backend.accept,
            )
        store = services.store()
        # SageMaker chose the output's location; its notifications finish the job (and may already
        # have: then the RUNNING move is refused and nothing recorded here is lost).
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
    with failing_on_error(job, "stepfunctions"):
        start_execution(job, settings.async_state_machine_arn, "SLUICE_ASYNC_STATE_MACHINE_ARN", execution_input)
