"""POST /v1/deployments/{job_id}/rollback (operators): ask the deployment's workflow to roll back now.

The route only records the request (details.rollback_requested: who, why, when), and only while the job
is unfinished; the workflow sees it at its next check (every endpoint poll and guard reading), puts the
baseline EndpointConfig back, waits for InService, checks it, and ends the job FAILED with
"rolled back by <operator>: <reason>". A cancel records the same request (kinds.deployment.hooks).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sluice.auth.roles import require_operator
from sluice.errors import DeploymentFinished, JobNotFound
from sluice.jobs import services
from sluice.jobs.models import Job, JobKind, JobStatus, utc_now
from sluice.jobs.views import JobView
from sluice.request.context import RequestContext
from sluice.request.validation import parse_json_body
from sluice.telemetry import logger

ROUTE = "POST /v1/deployments/{job_id}/rollback"
REQUESTED = "rollback_requested"
UNFINISHED = (JobStatus.QUEUED, JobStatus.AWAITING_APPROVAL, JobStatus.RUNNING)


class RollbackRequest(BaseModel):
    """Why the deployment is rolled back: kept on the job and in its failure reason."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


def rollback_note(by: str, reason: str) -> dict[str, Any]:
    return {"by": by, "reason": reason, "at": utc_now()}


def request_rollback(ctx: RequestContext, job_id: str, body: bytes) -> JobView:
    require_operator(ctx, ROUTE)
    request = parse_json_body(RollbackRequest, body)
    caller = ctx.caller.identity
    job = own_deployment(ctx, job_id)
    store = services.store()
    # Conditional on the job being unfinished, and the first request wins (its reason is the one shown).
    claimed = store.claim(
        job_id, statuses=UNFINISHED, unset=REQUESTED, **{REQUESTED: rollback_note(caller, request.reason)}
    )
    current = claimed or store.get(job_id) or job
    if claimed is None and current.status.terminal:
        raise DeploymentFinished(
            f"Deployment '{job_id}' is already {current.status.value}; only a QUEUED, AWAITING_APPROVAL or "
            "RUNNING deployment can be rolled back.",
            param="job_id",
            details={"status": current.status.value},
        )
    first = current.details.get(REQUESTED) or {}
    logger.info(
        "deployment rollback requested" if claimed else "deployment rollback already requested",
        extra={
            "audit": "deployment",
            "who": caller,
            "what": "rollback",
            "why": request.reason,
            "job_id": job_id,
            "endpoint_name": current.details.get("endpoint_name"),
            "status": current.status.value,
            "first_requested_by": first.get("by"),
        },
    )
    return JobView.of(current)


def own_deployment(ctx: RequestContext, job_id: str) -> Job:
    """Another caller's job, or one that is not a deployment, is answered like one that does not exist."""
    job = services.store().get_for_caller(job_id, ctx.caller.identity)
    if job is None or job.kind != JobKind.DEPLOYMENT:
        raise JobNotFound(
            f"Deployment '{job_id}' does not exist. GET /v1/jobs?kind=deployment lists your deployments.",
            param="job_id",
        )
    return job
