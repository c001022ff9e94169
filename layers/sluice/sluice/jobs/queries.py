"""GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel: a caller's own jobs only.

Another caller's job is answered exactly like a job that does not exist (404), so job ids reveal
nothing across callers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sluice.errors import JobNotCancellable, JobNotFound
from sluice.inference.context import RequestContext
from sluice.inference.validation import validation_failed
from sluice.jobs import services
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.jobs.views import JobList, JobListQuery, JobView, OutputFile
from sluice.settings import get_settings
from sluice.storage.keys import async_output_key, parse_s3_uri
from sluice.telemetry import logger

CANCELLED_ERROR = "Sluice.Cancelled"


def get_job(ctx: RequestContext, job_id: str) -> JobView:
    job = _own_job(ctx, job_id)
    if job.status != JobStatus.SUCCEEDED:
        return JobView.of(job)
    return JobView.of(job, **_downloads(job))


def list_jobs(ctx: RequestContext, query: JobListQuery) -> JobList:
    try:
        jobs, token = services.store().list_for_caller(
            ctx.caller.identity, status=query.status, kind=query.kind, limit=query.limit, next_token=query.next_token
        )
    except ValueError as exc:
        raise validation_failed([{"field": "query.next_token", "message": str(exc)}]) from None
    return JobList(data=[JobView.of(job) for job in jobs], next_token=token)


def cancel_job(ctx: RequestContext, job_id: str) -> JobView:
    """QUEUED, AWAITING_APPROVAL or RUNNING -> CANCELLED first (so nothing can finish the job afterwards),
    then the work is stopped: the Step Functions execution, for batch the transform job, and a pending
    approval is withdrawn (no operator is asked about a job that no longer runs)."""
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
            "only QUEUED, AWAITING_APPROVAL or RUNNING jobs can be.",
            param="job_id",
            details={"status": final.status.value},
        )
    stopped = {"execution": _stop_execution(cancelled, ctx.caller.identity)}
    if cancelled.kind == JobKind.BATCH:
        stopped["transform_job"] = _stop_transform_job(cancelled)
    if cancelled.details.get("approval_id"):
        stopped["approval"] = _withdraw_approval(cancelled, ctx.caller.identity)
    # The audit trail of a control action: who stopped what.
    logger.info(
        "job cancelled",
        extra={"job_id": job_id, "caller": ctx.caller.identity, "from_status": job.status.value, "stopped": stopped},
    )
    return JobView.of(cancelled)


def _own_job(ctx: RequestContext, job_id: str) -> Job:
    job = services.store().get_for_caller(job_id, ctx.caller.identity)
    if job is None:
        raise JobNotFound(f"Job '{job_id}' does not exist. GET /v1/jobs lists your jobs.", param="job_id")
    return job


def _stop_execution(job: Job, caller: str) -> str:
    arn = job.execution_id or ""
    if ":execution:" not in arn:
        # A SageMaker async request cannot be withdrawn: its late result is ignored (the job is final).
        return "none"
    try:
        services.stepfunctions().stop_execution(
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


def _stop_transform_job(job: Job) -> str:
    name = job.details.get("transform_job_name")
    if not name:
        return "none"
    try:
        services.sagemaker().stop_transform_job(TransformJobName=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        # A transform job that already ended cannot be stopped: nothing left to do.
        if code in ("ValidationException", "ResourceNotFound"):
            return "already ended"
        logger.warning("could not stop the transform job", extra={"job_id": job.job_id, "name": name, "code": code})
        return f"failed: {code}"
    return "stopped"


def _downloads(job: Job) -> dict[str, Any]:
    settings = get_settings()
    s3 = services.s3()
    expires = (datetime.now(UTC) + timedelta(seconds=settings.presigned_url_seconds)).isoformat(timespec="seconds")
    location = job.output_location
    if job.kind == JobKind.ASYNC:
        bucket, key = (
            parse_s3_uri(location) if location else (settings.data_bucket, async_output_key(job.caller, job.job_id))
        )
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.presigned_url_seconds
        )
        return {"output_url": url, "output_urls_expire_at": expires}
    if not location:
        return {}
    bucket, prefix = parse_s3_uri(location)
    try:
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=settings.batch_output_urls_max)
    except ClientError as exc:
        logger.warning("could not list the batch output", extra={"job_id": job.job_id, "error": str(exc)})
        return {}
    files = [
        OutputFile(
            key=item["Key"],
            size_bytes=item["Size"],
            url=s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": item["Key"]}, ExpiresIn=settings.presigned_url_seconds
            ),
        )
        for item in page.get("Contents", [])
    ]
    return {
        "output_files": files,
        "output_files_truncated": bool(page.get("IsTruncated")),
        "output_urls_expire_at": expires,
    }
