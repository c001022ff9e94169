"""The one way Sluice code gets a boto3 client: built once per container (per service, timeout and
region) on first use, with the platform's timeouts and retry mode.

Lazily built, so a route that never calls a service pays nothing for it. S3 clients always sign with
SigV4 (presigned URLs of SSE-KMS objects need it; boto3 would pick SigV2 in some regions). `region`
is for resources in another region than the function's (a caller's SNS topic).
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def get(service: str, timeout_seconds: float | None = None, region: str | None = None) -> Any:
    import boto3
    from botocore.config import Config

    from sluice.settings import get_settings

    settings = get_settings()
    config = Config(
        read_timeout=timeout_seconds or settings.default_timeout_seconds,
        connect_timeout=settings.connect_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": settings.backend_max_attempts},
        tcp_keepalive=True,
        signature_version="s3v4" if service == "s3" else None,
    )
    return boto3.client(service, config=config, region_name=region)
