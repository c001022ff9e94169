"""The async kind's part of the shared lifecycle: its output's download link.

Cancelling needs nothing beyond the shared steps: the state machine's execution is stopped, and a
SageMaker async request cannot be withdrawn (its late result is ignored: the job is final)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sluice import clients
from sluice.jobs.kind_hooks import KindHooks
from sluice.jobs.models import Job
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


HOOKS = KindHooks(outputs=outputs)
