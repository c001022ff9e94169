"""Starting a created job's Step Functions execution, for any kind.

The job row always exists first (the workflow updates it). An execution is named after its job, so
starting one twice is harmless: Step Functions returns the same execution for the same name and
input, and a retried start after a crash finds it.

With an Idempotency-Key the job id is derived from the request (sluice.jobs.idempotency.job_id_for)
and each step here is safe to repeat: `create_once` keeps the row an earlier attempt wrote, and a
start is skipped once the job has its execution recorded or has moved on.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice import clients
from sluice.errors import BackendMisconfigured, SluiceError
from sluice.jobs import idempotency, services
from sluice.jobs.models import Job, JobStatus
from sluice.jobs.store import JobExists
from sluice.providers.errors import from_client_error
from sluice.telemetry import logger

# Detail set on a job whose start was refused (failing_on_error): a retry of its key gets a new job.
START_FAILED = "start_failed"
# Generations of one key whose start was refused; past this the key's last job is answered.
_MAX_GENERATIONS = 20


def new_job_id(*, caller: str | None = None, route: str | None = None, key: str | None = None) -> str:
    """A random id; with an Idempotency-Key the id its (caller, route, key) derive, so a retry after a
    crash lands on the job the crashed attempt began. A job of that key whose start was refused is
    FAILED for good: the retry gets the next generation's id (a new job, as a retry without a key)."""
    if key is None or caller is None or route is None:
        return f"job-{secrets.token_hex(16)}"
    store = services.store()
    job_id = idempotency.job_id_for(caller, route, key)
    for generation in range(1, _MAX_GENERATIONS):
        job = store.get(job_id)
        if job is None or not job.details.get(START_FAILED):
            return job_id
        job_id = idempotency.job_id_for(caller, route, key, generation)
    return job_id


def create_once(job: Job) -> Job:
    """The job row, written once: a repeated create (a retry after a crash) gets the row as stored."""
    store = services.store()
    try:
        return store.create(job)
    except JobExists:
        existing = store.get(job.job_id)
        # The id holds the caller, so only a digest collision could name another caller's job.
        if existing is None or existing.caller != job.caller or existing.kind != job.kind:
            raise
        return existing


def already_started(job: Job) -> bool:
    """An earlier attempt started this job (its execution is recorded), or it moved on without us."""
    return bool(job.execution_id) or job.status not in (JobStatus.QUEUED, JobStatus.AWAITING_APPROVAL)


def execution_arn(state_machine_arn: str, name: str) -> str:
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{name}"


def is_execution_arn(execution_id: str | None) -> bool:
    """A Step Functions execution; a SageMaker async job's execution_id is its InferenceId instead."""
    return bool(execution_id) and ":execution:" in str(execution_id)


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


def start_once(job: Job, state_machine_arn: str, setting: str, build_input: Callable[[Job], BaseModel]) -> str:
    """A kind's workflow started for `job`, its input built from the row alone; the job fails saying why when
    the start does. Safe to repeat: a job whose execution is recorded is not started again (its ARN is
    returned), and one that moved on without us is left alone ("")."""
    if job.execution_id:
        return job.execution_id
    if already_started(job):
        return ""
    execution_input = build_input(job)
    with failing_on_error(job, "stepfunctions"):
        return start_execution(job, state_machine_arn, setting, execution_input)


@contextmanager
def failing_on_error(job: Job, service: str) -> Iterator[None]:
    """Marks the job FAILED with the reason when starting it fails, then lets the error through."""
    try:
        yield
    except Exception as error:
        reason = error.message if isinstance(error, SluiceError) else f"{type(error).__name__}: {error}"
        logger.error("job could not be started", extra={"job_id": job.job_id, "service": service, "reason": reason})
        services.store().transition(
            job.job_id, JobStatus.FAILED, failure_reason=f"Could not start: {reason}", add_details={START_FAILED: True}
        )
        raise
