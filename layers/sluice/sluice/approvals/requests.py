"""A workflow asks for an approval: "Wait for an operator's approval" records the request and its task token.

The job moves to AWAITING_APPROVAL (if its creator did not create it so) and notes the approval id;
the workflow then waits until an operator decides (sluice.approvals.decisions) or its timeout.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from sluice.approvals.models import Approval, ApprovalStatus, approval_id_for
from sluice.approvals.store import ApprovalStore
from sluice.jobs.models import JobStatus
from sluice.jobs.store import JobStore
from sluice.telemetry import logger


class JobNoLongerWaiting(Exception):
    """The job was cancelled or finished before its approval was requested: nothing to approve."""


class ApprovalRequest(BaseModel):
    """The wait task's payload (statemachines/batch_transform: "Wait for an operator's approval")."""

    model_config = ConfigDict(extra="forbid")

    task_token: str = Field(min_length=1)
    job_id: str
    kind: str
    instance_type: str
    instance_count: int = Field(ge=1)
    requested_by: str
    timeout_seconds: int = Field(ge=1)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def request_approval(approvals: ApprovalStore, jobs: JobStore, request: ApprovalRequest) -> Approval:
    job = jobs.get(request.job_id)
    if job is None or job.status.terminal:
        raise JobNoLongerWaiting(f"Job {request.job_id} is {job.status.value if job else 'gone'}: no approval asked.")
    now = datetime.now(UTC)
    approval = Approval(
        approval_id=approval_id_for(request.kind, request.job_id),
        job_id=request.job_id,
        kind=request.kind,
        instance_type=request.instance_type,
        instance_count=request.instance_count,
        requested_by=request.requested_by,
        requested_at=_iso(now),
        expires_at=_iso(now + timedelta(seconds=request.timeout_seconds)),
        task_token=request.task_token,
    )
    if not approvals.put_pending(approval):
        closed = approvals.get(approval.approval_id)
        raise JobNoLongerWaiting(
            f"Approval {approval.approval_id} is already {closed.status.value if closed else 'closed'}."
        )
    note = {"approval_id": approval.approval_id}
    if job.status == JobStatus.AWAITING_APPROVAL:
        jobs.merge_details(job.job_id, **note)
        current = jobs.get(job.job_id)
    else:
        # The moved job, or (it moved on meanwhile) what it is now.
        current = jobs.transition(job.job_id, JobStatus.AWAITING_APPROVAL, add_details=note) or jobs.get(job.job_id)
    # Cancelled meanwhile (cancel found no approval to withdraw yet): withdraw it here, so it is never listed.
    if current is None or current.status.terminal:
        approvals.close(
            approval.approval_id,
            ApprovalStatus.WITHDRAWN,
            by="workflow",
            at=_iso(datetime.now(UTC)),
            reason=f"job {current.status.value if current else 'gone'} before an operator decided",
            from_status=ApprovalStatus.PENDING,
        )
        raise JobNoLongerWaiting(f"Job {job.job_id} ended while its approval was requested.")
    logger.info(
        "approval requested",
        extra={
            "audit": "approval",
            "approval_id": approval.approval_id,
            "job_id": approval.job_id,
            "kind": approval.kind,
            "instance_type": approval.instance_type,
            "instance_count": approval.instance_count,
            "requested_by": approval.requested_by,
            "expires_at": approval.expires_at,
        },
    )
    return approval
