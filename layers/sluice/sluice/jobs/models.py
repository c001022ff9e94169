"""The job record: the contract every job component shares, whatever its kind."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sluice.jobs.kinds import JobKind

__all__ = ["ALLOWED_TRANSITIONS", "TERMINAL", "Callback", "Job", "JobKind", "JobStatus", "utc_now"]


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    # Its instance type needs an operator's approval (sluice.approvals); its workflow waits.
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# A job only moves forward: duplicate or late notifications can never undo a final state.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset(
        {JobStatus.AWAITING_APPROVAL, JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.AWAITING_APPROVAL: frozenset(
        {JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Callback(BaseModel):
    """Where the final status is sent: an SNS topic of the caller's, or an HMAC-signed HTTPS webhook."""

    model_config = ConfigDict(extra="forbid")

    sns_topic_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$"
    )
    webhook_url: str | None = Field(default=None, pattern=r"^https://[^\s]+$", max_length=2048)


class Job(BaseModel):
    """One row of the jobs table. `caller` is the owner: no other caller ever sees the job."""

    job_id: str
    caller: str
    kind: JobKind
    model: str
    status: JobStatus = JobStatus.QUEUED
    input_location: str  # s3://bucket/key (async) or s3://bucket/prefix/ (batch)
    output_location: str | None = None
    failure_reason: str | None = None
    created_at: str = Field(default_factory=utc_now)
    updated_at: str = Field(default_factory=utc_now)
    started_at: str | None = None
    finished_at: str | None = None
    # The Step Functions execution ARN, or the SageMaker InferenceId for native async.
    execution_id: str | None = None
    callback: Callback | None = None
    # The kind's own facts (a batch job's transform job name, instance type and count, ...).
    details: dict[str, Any] = {}
    expires_at: int | None = None  # epoch seconds: DynamoDB TTL
