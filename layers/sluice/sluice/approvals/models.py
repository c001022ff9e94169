"""The approval record and what the approvals API reads and answers."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    # Nobody decided in time (the workflow's wait timed out).
    EXPIRED = "expired"
    # The job was cancelled while it waited.
    WITHDRAWN = "withdrawn"


Decision = Literal["approve", "deny"]
DECIDED: dict[str, ApprovalStatus] = {"approve": ApprovalStatus.APPROVED, "deny": ApprovalStatus.DENIED}
APPROVAL_ID_PATTERN = r"^apr-[0-9a-f]{32}$"


def approval_id_for(kind: str, job_id: str) -> str:
    """One approval per job and kind: a retried request step finds (and refreshes) the same record."""
    return "apr-" + hashlib.sha256(f"{kind}\n{job_id}".encode()).hexdigest()[:32]


class Approval(BaseModel):
    """One row of the approvals table. `task_token` resumes the waiting workflow: never shown to anyone."""

    approval_id: str
    job_id: str
    kind: str  # what waits: the job's kind ("batch"; "training", "deployment" later)
    instance_type: str
    instance_count: int
    requested_by: str  # the job's owner
    requested_at: str
    expires_at: str  # ISO time after which the workflow no longer waits
    status: ApprovalStatus = ApprovalStatus.PENDING
    task_token: str = ""
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    purge_at: int | None = None  # epoch seconds: DynamoDB TTL, well after the decision


class ApprovalView(BaseModel):
    """A pending request as GET /v1/approvals lists it."""

    id: str
    job_id: str
    kind: str
    instance_type: str
    instance_count: int
    requested_by: str
    requested_at: str
    expires_at: str

    @classmethod
    def of(cls, approval: Approval) -> ApprovalView:
        return cls(
            id=approval.approval_id,
            job_id=approval.job_id,
            kind=approval.kind,
            instance_type=approval.instance_type,
            instance_count=approval.instance_count,
            requested_by=approval.requested_by,
            requested_at=approval.requested_at,
            expires_at=approval.expires_at,
        )


class ApprovalList(BaseModel):
    data: list[ApprovalView]


class DecisionRecord(BaseModel):
    """What the job records as details.approval, and the audit log line."""

    decision: Literal["approved", "denied"]
    by: str
    at: str
    reason: str


class DecidedApproval(ApprovalView):
    """POST /v1/approvals/{id}/approve|deny answers the approval with its decision."""

    status: ApprovalStatus
    decision: DecisionRecord


class DecisionRequest(BaseModel):
    """POST /v1/approvals/{id}/approve|deny: why (kept on the job and in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, description="Why the request is approved or denied")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank: say why")
        return value.strip()
