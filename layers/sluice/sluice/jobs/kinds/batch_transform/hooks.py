"""The batch kind's part of the shared lifecycle: stopping its transform job on cancel, and download
links for its output files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.jobs.kind_hooks import KindHooks
from sluice.jobs.kinds.batch_transform.transform_start import stop_transform_job
from sluice.jobs.models import Job
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
    outcome = stop_transform_job(clients.get("sagemaker"), name)
    if outcome.startswith("failed"):
        logger.warning("could not stop the transform job", extra={"job_id": job.job_id, "name": name})
    return outcome


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


HOOKS = KindHooks(cancel=cancel, outputs=outputs)
