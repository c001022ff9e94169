"""boto3 clients on the embedded AWS for local mode's own machinery (runners, trained-model servers)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config


def embedded_s3(aws_url: str, region: str) -> Any:
    """Path-style (the embedded endpoint is one host), few retries (a local failure is not transient)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=aws_url,
        region_name=region,
        aws_access_key_id="local",
        aws_secret_access_key="local",  # noqa: S106 - the embedded AWS takes any credentials
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )
