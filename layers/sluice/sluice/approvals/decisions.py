"""GET /v1/approvals, POST /v1/approvals/{id}/approve|deny: operators decide; the waiting workflow resumes.

A decision is a conditional write on the pending record (a second one is 409 approval_closed), then
SendTaskSuccess / SendTaskFailure with the stored token, then details.approval on the job and an
audit log line. The record keeps who decided, when and why (the durable audit trail).
"""

from __future__ import annotations

import json
import re

from botocore.exceptions import ClientError

from sluice import clients
from sluice.approvals import services
from sluice.approvals.models import (
    APPROVAL_ID_PATTERN,
    DECIDED,
    Approval,
    ApprovalList,
    ApprovalStatus,
    ApprovalView,
    DecidedApproval,
    Decision,
    DecisionRecord,
    DecisionRequest,
)
from sluice.auth.roles import require_operator
from sluice.errors import ApprovalClosed, ApprovalNotFound
from sluice.jobs import services as job_services
from sluice.jobs.models import utc_now
from sluice.providers.errors import from_client_error
from sluice.request.context import RequestContext
from sluice.request.validation import parse_json_body
from sluice.telemetry import logger

LIST_ROUTE = "GET /v1/approvals"
DENIED_ERROR = "ApprovalDenied"
# Step Functions' answers when the execution no longer waits on the token (timed out, stopped).
_GONE = {"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"}


def decision_route(decision: Decision) -> str:
    return f"POST /v1/approvals/{{id}}/{decision}"


def list_approvals(ctx: RequestContext) -> ApprovalList:
    require_operator(ctx, LIST_ROUTE)
    pending = services.store().list_pending(utc_now())
    return ApprovalList(data=[ApprovalView.of(approval) for approval in pending])


def decide_approval(ctx: RequestContext, approval_id: str, decision: Decision, body: bytes) -> DecidedApproval:
    require_operator(ctx, decision_route(decision))
    # An empty body is a missing reason, named as such.
    request = parse_json_body(DecisionRequest, body if body.strip() else b"{}")
    store = services.store()
    # Not even shaped like an id (too long for a DynamoDB key, say): unknown, not a 500.
    approval = store.get(approval_id) if re.fullmatch(APPROVAL_ID_PATTERN, approval_id) else None
    if approval is None:
        raise ApprovalNotFound(
            f"Approval '{approval_id}' does not exist. GET /v1/approvals lists pending ones.", param="id"
        )
    operator, now = ctx.caller.identity, utc_now()
    if approval.status == ApprovalStatus.PENDING and approval.expires_at <= now:
        store.close(
            approval_id,
            ApprovalStatus.EXPIRED,
            by="timeout",
            at=now,
            reason="no operator decided in time",
            from_status=ApprovalStatus.PENDING,
        )
        raise _closed(approval_id, "expired", approval.expires_at)
    status = DECIDED[decision]
    decided = store.close(
        approval_id, status, by=operator, at=now, reason=request.reason, from_status=ApprovalStatus.PENDING
    )
    if decided is None:
        current = store.get(approval_id) or approval
        raise _closed(approval_id, current.status.value, current.decided_at)
    record = DecisionRecord(decision=status.value, by=operator, at=now, reason=request.reason)
    _resume_workflow(decided, record)
    job_services.store().merge_details(decided.job_id, approval=record.model_dump(mode="json"))
    # The audit trail of a cost decision: who let what run (or not), for whom, and why.
    logger.info(
        "approval decided",
        extra={
            "audit": "approval",
            "approval_id": approval_id,
            "job_id": decided.job_id,
            "kind": decided.kind,
            "decision": record.decision,
            "by": operator,
            "reason": record.reason,
            "instance_type": decided.instance_type,
            "instance_count": decided.instance_count,
            "requested_by": decided.requested_by,
            "request_id": ctx.request_id,
        },
    )
    return DecidedApproval(**ApprovalView.of(decided).model_dump(), status=decided.status, decision=record)


def withdraw_for_job(approval_id: str, *, by: str, reason: str) -> bool:
    """A cancelled job's pending approval is closed, so nobody approves a job that no longer runs."""
    closed = services.store().close(
        approval_id, ApprovalStatus.WITHDRAWN, by=by, at=utc_now(), reason=reason, from_status=ApprovalStatus.PENDING
    )
    return closed is not None


def _resume_workflow(approval: Approval, record: DecisionRecord) -> None:
    stepfunctions = clients.get("stepfunctions")
    try:
        if record.decision == ApprovalStatus.APPROVED.value:
            stepfunctions.send_task_success(
                taskToken=approval.task_token, output=json.dumps(record.model_dump(mode="json"))
            )
        else:
            stepfunctions.send_task_failure(
                taskToken=approval.task_token,
                error=DENIED_ERROR,
                cause=f"Instance approval denied by {record.by}: {record.reason}"[:32768],
            )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in _GONE:
            # Throttled or unavailable: the workflow still waits, so the decision can be made again.
            services.store().reopen(approval.approval_id, approval.status)
            raise from_client_error("stepfunctions", exc) from exc
        # The workflow stopped waiting (timed out or stopped) just before this decision: it counts for nothing.
        services.store().close(
            approval.approval_id,
            ApprovalStatus.EXPIRED,
            by="timeout",
            at=utc_now(),
            reason=f"the workflow no longer waited ({code})",
            from_status=approval.status,
        )
        raise _closed(approval.approval_id, "expired", approval.expires_at) from None


def _closed(approval_id: str, status: str, when: str | None) -> ApprovalClosed:
    return ApprovalClosed(
        f"Approval '{approval_id}' is already {status}{f' (at {when})' if when else ''}: it can be decided "
        "only once, while its job waits.",
        param="id",
        details={"status": status},
    )
