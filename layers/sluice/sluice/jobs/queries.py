"""GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel: a caller's own jobs only.

Another caller's job is answered exactly like a job that does not exist (404), so job ids reveal
nothing across callers.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from sluice import clients
from sluice.errors import JobNotCancellable, JobNotFound
from sluice.jobs import services
from sluice.jobs.kinds import hooks
from sluice.jobs.models import Job, JobStatus
from sluice.jobs.views import JobList, JobListQuery, JobView
from sluice.jobs.workflow_start import is_execution_arn
from sluice.request.context import RequestContext
from sluice.request.validation import validation_failed
from sluice.telemetry import logger

CANCELLED_ERROR = "Sluice.Cancelled"


def get_job(ctx: RequestContext, job_id: str) -> JobView:
    job = _own_job(ctx, job_id)
    if job.status != JobStatus.SUCCEEDED:
        return JobView.of(job)
    return JobView.of(job, **hooks(job.kind).outputs(job))


def list_jobs(ctx: RequestContext, query: JobListQuery) -> JobList:
    try:
        jobs, token = services.store().list_for_caller(
            ctx.caller.identity, status=query.status, kind=query.kind, limit=query.limit, next_token=query.next_token
        )
    except ValueError as exc:
        raise validation_failed([{"field": "query.next_token", "message": str(exc)}]) from None
    return JobList(data=[JobView.of(job) for job in jobs], next_token=token)


def cancel_job(ctx: RequestContext, job_id: str) -> JobView:
    """Any non-final status -> CANCELLED first (so nothing can finish the job afterwards), then the work
    is stopped: the Step Functions execution (unless the kind's workflow must finish the cancel itself:
    KindHooks.stops_execution, a deployment's rollback), whatever else the kind started (its cancel
    hook), and a pending approval is withdrawn (no operator is asked about a job that no longer runs)."""
    job = _own_job(ctx, job_id)
    store = services.store()
    cancelled = None
    if not job.status.terminal:
        # Who cancelled is kept on the job (audit), next to whatever the workflow recorded.
        note = {"cancelled_by": ctx.caller.identity, "cancelled_request_id": ctx.request_id}
        cancelled = store.transition(job_id, JobStatus.CANCELLED, add_details=note)
    if cancelled is None:
        final = store.get(job_id) or job
        raise JobNotCancellable(
            f"Job '{job_id}' is already {final.status.value} and cannot be cancelled; "
            f"only {_unfinished()} jobs can be.",
            param="job_id",
            details={"status": final.status.value},
        )
    kind = hooks(cancelled.kind)
    # A kept execution sees the job CANCELLED at its next check and winds its work down itself.
    execution = stop_execution(cancelled, ctx.caller.identity) if kind.stops_execution else "kept"
    stopped = {"execution": execution}
    stopped.update(kind.cancel(cancelled))
    if cancelled.details.get("approval_id"):
        stopped["approval"] = _withdraw_approval(cancelled, ctx.caller.identity)
    # The audit trail of a control action: who stopped what.
    logger.info(
        "job cancelled",
        extra={"job_id": job_id, "caller": ctx.caller.identity, "from_status": job.status.value, "stopped": stopped},
    )
    return JobView.of(cancelled)


def _unfinished() -> str:
    names = [status.value for status in JobStatus if not status.terminal]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def _own_job(ctx: RequestContext, job_id: str) -> Job:
    job = services.store().get_for_caller(job_id, ctx.caller.identity)
    if job is None:
        raise JobNotFound(f"Job '{job_id}' does not exist. GET /v1/jobs lists your jobs.", param="job_id")
    return job


def stop_execution(job: Job, caller: str) -> str:
    """StopExecution of the job's workflow: 'stopped', 'none' (no Step Functions execution), 'not found'
    or 'failed: <code>'."""
    arn = job.execution_id or ""
    if not is_execution_arn(arn):
        # A SageMaker async request cannot be withdrawn: its late result is ignored (the job is final).
        return "none"
    try:
        clients.get("stepfunctions").stop_execution(
            executionArn=arn, error=CANCELLED_ERROR, cause=f"Cancelled by {caller} through the API"
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ExecutionDoesNotExist":
            return "not found"
        logger.warning("could not stop the execution", extra={"job_id": job.job_id, "execution": arn, "code": code})
        return f"failed: {code}"
    return "stopped"


def _withdraw_approval(job: Job, caller: str) -> str:
    from sluice.approvals.decisions import withdraw_for_job

    withdrawn = withdraw_for_job(job.details["approval_id"], by=caller, reason="job cancelled before a decision")
    return "withdrawn" if withdrawn else "already closed"
