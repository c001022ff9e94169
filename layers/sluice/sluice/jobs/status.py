"""Recording a job's state from a workflow step: running, succeeded, failed, cancelled, or a note.

The JobStore's forward-only transitions decide: a job cancelled (or finished) meanwhile stays as it
is, and the step reports `changed: false` so the workflow neither overwrites nor announces it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from sluice.jobs.models import JobStatus
from sluice.jobs.store import JobStore

# A failure reason is shown to the caller: long enough for SageMaker's messages, bounded for the table.
MAX_REASON_CHARS = 2000


class JobNotFound(Exception):
    """The workflow names a job that has no record (submission writes the record first)."""


class StepError(BaseModel):
    """What a Catch puts under its ResultPath: Step Functions' {"Error", "Cause"}."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = ""
    cause: str | None = None

    @classmethod
    def of(cls, value: dict[str, Any]) -> StepError:
        return cls(error=str(value.get("Error") or value.get("error") or ""), cause=value.get("Cause"))


class StatusUpdate(BaseModel):
    """One step's request. Without `status` only details and notes are recorded."""

    model_config = ConfigDict(extra="forbid")

    job_id: str
    status: JobStatus | None = None
    execution_id: str | None = None
    output_location: str | None = None
    failure_reason: str | None = None
    # The Catch that led here; its message becomes the failure reason.
    error: dict[str, Any] | None = None
    details: dict[str, Any] = {}
    # A notification that could not be delivered (after the workflow's retries): recorded, never fatal.
    delivery_error: dict[str, Any] | None = None


class StatusResult(BaseModel):
    job_id: str
    status: JobStatus
    # This call moved the job.
    changed: bool
    # The job is in the requested status, moved by this call or by an earlier attempt of the same step
    # (a retried task): the workflow goes on. False when it was cancelled or finished meanwhile.
    applied: bool


def failure_reason(error: dict[str, Any]) -> tuple[str, str]:
    """(error type, message) of a caught error.

    A Lambda error's Cause is its JSON error shape (the message is `errorMessage`, the stack trace is
    dropped); a service integration's Cause is text; our own Pass states give plain text.
    """
    step = StepError.of(error)
    message = step.cause or ""
    try:
        parsed = json.loads(message)
    except (TypeError, ValueError):
        parsed = None
    if isinstance(parsed, dict):
        message = str(parsed.get("errorMessage") or parsed.get("Cause") or "")
        step.error = step.error or str(parsed.get("errorType") or "")
    if not message:
        message = {
            "States.Timeout": "The step did not finish within its time limit.",
            "States.TaskFailed": "A workflow step failed.",
        }.get(step.error, f"The job failed ({step.error or 'unknown error'}).")
    return step.error or "JobFailed", message[:MAX_REASON_CHARS]


def record_status(store: JobStore, update: StatusUpdate) -> StatusResult:
    details = dict(update.details)
    if update.delivery_error is not None:
        kind, reason = failure_reason(update.delivery_error)
        details["notification"] = {"delivered": False, "error": kind, "reason": reason}
    if update.status is None:
        if not store.merge_details(update.job_id, **details):
            raise JobNotFound(f"Job {update.job_id} has no record.")
        job = store.get(update.job_id)
        assert job is not None
        return StatusResult(job_id=update.job_id, status=job.status, changed=True, applied=True)

    fields: dict[str, Any] = {}
    if update.execution_id:
        fields["execution_id"] = update.execution_id
    if update.output_location:
        fields["output_location"] = update.output_location
    reason = update.failure_reason
    if update.error is not None:
        kind, message = failure_reason(update.error)
        reason = reason or message
        details.setdefault("failure_type", kind)
    if update.status == JobStatus.FAILED:
        fields["failure_reason"] = (reason or "The job failed.")[:MAX_REASON_CHARS]
    job = store.transition(update.job_id, update.status, add_details=details, **fields)
    if job is not None:
        return StatusResult(job_id=job.job_id, status=job.status, changed=True, applied=True)
    current = store.get(update.job_id)
    if current is None:
        raise JobNotFound(f"Job {update.job_id} has no record.")
    applied = current.status == update.status
    return StatusResult(job_id=current.job_id, status=current.status, changed=False, applied=applied)
