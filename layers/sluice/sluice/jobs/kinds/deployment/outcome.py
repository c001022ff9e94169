"""A deployment's end ("Record outcome"): what it came to, in the job's details, and the final status.

| it ended | details.outcome | status |
| --- | --- | --- |
| the last step passed, promoted, autoscaling attached | promoted | SUCCEEDED |
| ab: the split's bake passed (never promoted) | split | SUCCEEDED |
| a guard tripped, too few invocations, a failing step | rolled_back | FAILED (the rollback reason) |
| POST /v1/deployments/{id}/rollback | rolled_back | FAILED ("rolled back by <operator>: <reason>") |
| cancelled | rolled_back | CANCELLED (set by the cancel) |
| promoted, but autoscaling could not be attached | promoted | FAILED (the new version keeps serving) |

The documented choice for the last row: the new version already serves all traffic and the old variants are
gone, so moving traffic back would start the old instances again for a scaling problem; whatever was
attached is detached, and the job fails saying so, for an operator to attach scaling or deploy again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput
from sluice.jobs.models import JobStatus
from sluice.jobs.status import MAX_REASON_CHARS, failure_reason
from sluice.jobs.store import JobStore

Result = Literal["promoted", "split", "rolled_back", "autoscaling_failed"]


class Finish(BaseModel):
    job: DeploymentExecutionInput
    result: Result
    # The caught error (Step Functions' {"Error", "Cause"}) that led to a rollback or a failed attachment.
    error: dict[str, Any] | None = None
    autoscaling: dict[str, Any] | None = None


class Finished(BaseModel):
    """The state machine's $.finished: "Outcome?" acts on `status`."""

    status: Literal["SUCCEEDED", "FAILED", "CANCELLED"]
    error: dict[str, str] | None = None


def requested_reason(requested: dict[str, Any], cancelled: bool) -> str:
    who, why = requested.get("by") or "an operator", requested.get("reason") or "no reason given"
    return f"{'cancelled' if cancelled else 'rolled back'} by {who}: {why}"


def rollback_reason(error: dict[str, Any] | None) -> tuple[str, str]:
    """(failure type, words) of what made the workflow roll back."""
    if not error:
        return "RolledBack", "The deployment was rolled back."
    return failure_reason(error)


def finish(store: JobStore, request: Finish) -> Finished:
    job = store.get(request.job.job_id)
    details = job.details if job else {}
    if request.result in ("promoted", "split"):
        store.merge_details(request.job.job_id, outcome=request.result)
        return Finished(status="SUCCEEDED")
    if request.result == "autoscaling_failed":
        _, words = rollback_reason(request.error)
        store.merge_details(
            request.job.job_id, outcome="promoted", autoscaling={"attached": False, "error": words[:MAX_REASON_CHARS]}
        )
        cause = (
            f"The new version was promoted and serves all traffic, but autoscaling could not be attached: {words} "
            "Nothing is scaling it; attach scaling to the variant or deploy again."
        )
        return Finished(status="FAILED", error={"Error": "AutoscalingNotAttached", "Cause": cause[:MAX_REASON_CHARS]})
    cancelled = job is not None and job.status == JobStatus.CANCELLED
    requested = details.get("rollback_requested")
    if cancelled or requested:
        kind = "Cancelled" if cancelled else "RollbackRequested"
        words = requested_reason(requested or {}, cancelled)
    else:
        kind, words = rollback_reason(request.error)
    store.merge_details(request.job.job_id, outcome="rolled_back", rollback_reason=words[:MAX_REASON_CHARS])
    if cancelled:
        return Finished(status="CANCELLED")
    return Finished(status="FAILED", error={"Error": kind, "Cause": words[:MAX_REASON_CHARS]})
