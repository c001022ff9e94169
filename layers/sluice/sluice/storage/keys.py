"""The one S3 key scheme. Every job's data lives under its caller's prefix, so IAM and listings can
be scoped per caller, and an output always sits next to its input."""

from __future__ import annotations

ASYNC_PREFIX = "async"
UPLOADS_PREFIX = "uploads"
BATCH_DROP_PREFIX = "batch-input"
BATCH_OUTPUT_PREFIX = "batch-output"


def _safe(caller: str) -> str:
    # Caller ids can be IAM ARNs: keep them readable but free of path separators.
    return caller.replace("/", "_").replace(":", "_")


def safe_caller(caller: str) -> str:
    """The caller's path segment in every key: `<prefix>/<safe_caller(caller)>/...`."""
    return _safe(caller)


def async_input_key(caller: str, job_id: str) -> str:
    return f"{ASYNC_PREFIX}/{_safe(caller)}/{job_id}/input"


def async_output_key(caller: str, job_id: str) -> str:
    return f"{ASYNC_PREFIX}/{_safe(caller)}/{job_id}/output"


def upload_key(caller: str, upload_id: str) -> str:
    return f"{UPLOADS_PREFIX}/{_safe(caller)}/{upload_id}"


def batch_drop_model(key: str) -> str | None:
    """`batch-input/<model>/...` names the model a dropped file is for."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == BATCH_DROP_PREFIX and parts[1] and parts[-1]:
        return parts[1]
    return None


def batch_output_prefix(caller: str, job_id: str) -> str:
    return f"{BATCH_OUTPUT_PREFIX}/{_safe(caller)}/{job_id}/"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key
