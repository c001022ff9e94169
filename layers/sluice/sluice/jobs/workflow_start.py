"""Starting a created job's Step Functions execution, for any kind.

The job row always exists first (the workflow updates it). An execution is named after its job, so
starting one twice is harmless: Step Functions returns the same execution for the same name and
input, and a retried start after a crash finds it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice import clients
from sluice.errors import BackendMisconfigured, SluiceError
from sluice.jobs import services
from sluice.jobs.models import Job, JobStatus
from sluice.providers.errors import from_client_error
from sluice.telemetry import logger


def new_job_id() -> str:
    return f"job-{secrets.token_hex(16)}"


def execution_arn(state_machine_arn: str, name: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


def start_execution(job: Job, state_machine_arn: str, setting: str, execution_input: BaseModel) -> str:
    if not state_machine_arn:
        raise BackendMisconfigured(f"Jobs are not configured on this stack ({setting} is empty).")
    try:
        arn = clients.get("stepfunctions").start_execution(
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
def failing_on_error(job: Job, service: str) -> Iterator[None]:
    """Marks the job FAILED with the reason when starting it fails, then lets the error through."""
    try:
        yield
    except Exception as error:
        reason = error.message if isinstance(error, SluiceError) else f"{type(error).__name__}: {error}"
        logger.error("job could not be started", extra={"job_id": job.job_id, "service": service, "reason": reason})
        services.store().transition(job.job_id, JobStatus.FAILED, failure_reason=f"Could not start: {reason}")
        raise
