"""The async kind's part of the shared lifecycle: its output's download link, and, for a job on a
SageMaker async endpoint, what S3 holds when the reaper finds it stuck (a lost notification).

Cancelling needs nothing beyond the shared steps: the state machine's execution is stopped, and a
SageMaker async request cannot be withdrawn (its late result is ignored: the job is final)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.jobs.kind_hooks import KindHooks, Reconciliation, shared_stale_after
from sluice.jobs.kinds.async_inference.start import NATIVE_RUNNER
from sluice.jobs.models import Job, JobStatus
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.settings import get_settings
from sluice.storage.keys import async_output_key, parse_s3_uri


def outputs(job: Job) -> dict[str, Any]:
    settings = get_settings()
    location = job.output_location
    bucket, key = (
        parse_s3_uri(location) if location else (settings.data_bucket, async_output_key(job.caller, job.job_id))
    )
    url = clients.get("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.presigned_url_seconds
    )
    expires = datetime.now(UTC) + timedelta(seconds=settings.presigned_url_seconds)
    return {"output_url": url, "output_urls_expire_at": expires.isoformat(timespec="seconds")}


def reconcile(job: Job) -> Reconciliation | None:
    """A SageMaker async endpoint writes the output object or the failure object, then notifies; a job
    still RUNNING past its limit lost its notification, or SageMaker has not finished. The objects
    decide; with neither, the job fails once reaper_async_endpoint_limit_minutes passed since it started.
    A job on the async state machine has nothing here to look at (None)."""
    if job.details.get("runner") != NATIVE_RUNNER:
        return None
    if job.output_location and _exists(job.output_location):
        return Reconciliation(
            status=JobStatus.SUCCEEDED,
            output_location=job.output_location,
            found=f"the output object {job.output_location} exists",
        )
    failure_location = job.details.get("failure_location")
    if failure_location:
        content = _read_text(failure_location)
        if content is not None:
            reason = content.strip() or "SageMaker wrote an empty failure object."
            return Reconciliation(
                status=JobStatus.FAILED,
                failure_reason=reason[:MAX_REASON_CHARS],
                found=f"the failure object {failure_location} exists",
            )
    limit_minutes = get_settings().reaper_async_endpoint_limit_minutes
    started = datetime.fromisoformat(job.started_at or job.created_at)
    found = "neither the output object nor the failure object exists"
    if datetime.now(UTC) - started < timedelta(minutes=limit_minutes):
        return Reconciliation(found=found)
    return Reconciliation(
        status=JobStatus.FAILED,
        failure_reason=f"SageMaker wrote neither an output nor a failure for this job within {limit_minutes:g} "
        "minutes of its start. Submit the job again.",
        found=f"{found} after {limit_minutes:g} minutes",
    )


def _exists(location: str) -> bool:
    """Listed rather than HEAD: a HEAD of a missing key is 403 unless ListBucket is granted on the whole
    bucket, and the reaper may list only the async endpoints' output prefix."""
    bucket, key = parse_s3_uri(location)
    page = clients.get("s3").list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(item["Key"] == key for item in page.get("Contents", []))


def _read_text(location: str) -> str | None:
    bucket, key = parse_s3_uri(location)
    try:
        body = clients.get("s3").get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{MAX_REASON_CHARS * 4}")["Body"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return body.read().decode("utf-8", errors="replace")


def stale_after(status: JobStatus) -> float | None:
    if status == JobStatus.RUNNING:
        return get_settings().reaper_async_running_limit_minutes * 60
    return shared_stale_after(status)


HOOKS = KindHooks(outputs=outputs, reconcile=reconcile, stale_after=stale_after)
