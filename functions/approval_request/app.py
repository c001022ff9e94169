"""Workflow step "Wait for an operator's approval" (lambda:invoke.waitForTaskToken): records the request.

Input: sluice.approvals.requests.ApprovalRequest, with the task token the workflow waits on. The
token goes to the approvals table only; an operator's decision (POST /v1/approvals/{id}/approve|deny)
sends it back to Step Functions. The function's own answer is ignored by the waiting task.
"""

from __future__ import annotations

from typing import Any

from sluice.approvals import services as approval_services
from sluice.approvals.requests import ApprovalRequest, request_approval
from sluice.jobs import services as job_services
from sluice.telemetry import logger, tracer

approvals = approval_services.store()
jobs = job_services.store()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = ApprovalRequest.model_validate(event)
    logger.append_keys(job_id=request.job_id)
    approval = request_approval(approvals, jobs, request)
    return {"approval_id": approval.approval_id, "expires_at": approval.expires_at}
