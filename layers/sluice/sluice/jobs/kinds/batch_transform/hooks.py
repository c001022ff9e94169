"""The batch kind's part of the shared lifecycle: stopping its transform job on cancel, download links
for its output files, and what its transform job says when the reaper finds the workflow gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.jobs.kind_hooks import KindHooks, Reconciliation, shared_stale_after
from sluice.jobs.kinds.batch_transform.transform_start import stop_transform_job
from sluice.jobs.models import Job, JobStatus
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.jobs.views import OutputFile
from sluice.settings import get_settings
from sluice.storage.keys import parse_s3_uri
from sluice.telemetry import logger


def cancel(job: Job) -> dict[str, str]:
    return {"transform_job": _stop_transform_job(job)}


def _stop_transform_job(job: Job) -> str:
    # Recorded by "Start transform job" before it creates the job (transform_start), so a cancel at any
    # point finds the name of a transform job that may exist; stopping one never created is harmless.
    name = job.details.get("transform_job_name")
    if not name:
        return "none"
    # A failure is logged there (with the name); the outcome goes into the caller's audit line.
    return stop_transform_job(clients.get("sagemaker"), name)


def outputs(job: Job) -> dict[str, Any]:
    if not job.output_location:
        return {}
    settings = get_settings()
    s3 = clients.get("s3")
    bucket, prefix = parse_s3_uri(job.output_location)
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
    expires = datetime.now(UTC) + timedelta(seconds=settings.presigned_url_seconds)
    return {
        "output_files": files,
        "output_files_truncated": bool(page.get("IsTruncated")),
        "output_urls_expire_at": expires.isoformat(timespec="seconds"),
    }


def reconcile(job: Job) -> Reconciliation | None:
    """The outcome of the transform job the workflow last recorded (details.transform_job_name).

    Its execution is gone, so nothing else will look at the transform job again: one still in progress
    is stopped (it would bill on) and the job fails; Stopping is left for the next run to see Stopped."""
    name = job.details.get("transform_job_name")
    if not name:
        return None
    try:
        described = clients.get("sagemaker").describe_transform_job(TransformJobName=name)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        # SageMaker answers an unknown name with ValidationException "Could not find transform job ...".
        if error.get("Code") in ("ValidationException", "ResourceNotFound") and "find" in error.get("Message", ""):
            return Reconciliation(
                status=JobStatus.FAILED,
                failure_reason=f"Transform job {name} does not exist: it was never created, or SageMaker no longer "
                "keeps it.",
                found=f"transform job {name} not found",
            )
        raise
    status = described["TransformJobStatus"]
    found = f"transform job {name} {status}"
    if status == "Completed":
        return Reconciliation(
            status=JobStatus.SUCCEEDED, output_location=described["TransformOutput"]["S3OutputPath"], found=found
        )
    if status == "Failed":
        reason = described.get("FailureReason") or f"Transform job {name} failed; SageMaker gave no reason."
        return Reconciliation(status=JobStatus.FAILED, failure_reason=reason[:MAX_REASON_CHARS], found=found)
    if status == "Stopped":
        return Reconciliation(status=JobStatus.CANCELLED, found=found)
    if status == "InProgress":
        stopped = _stop_transform_job(job)
        return Reconciliation(
            status=JobStatus.FAILED,
            failure_reason=f"The job's workflow ended while transform job {name} was still running; the transform "
            f"job was stopped ({stopped}). Submit the job again.",
            found=found,
            actions={"transform_job": stopped},
        )
    # Stopping: the next run sees it Stopped.
    return Reconciliation(found=found)


def stale_after(status: JobStatus) -> float | None:
    if status == JobStatus.RUNNING:
        return get_settings().reaper_batch_running_limit_minutes * 60
    return shared_stale_after(status)


HOOKS = KindHooks(cancel=cancel, outputs=outputs, reconcile=reconcile, stale_after=stale_after)
