"""The AWS clients job code uses, built once per container (the backend clients come from providers.clients)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sluice.jobs.store import JobStore
from sluice.jobs.upload_tickets import UploadTickets
from sluice.providers import clients
from sluice.settings import get_settings


def store() -> JobStore:
    settings = get_settings()
    return JobStore(clients.get("dynamodb"), settings.jobs_table, settings.job_ttl_days)


def upload_tickets() -> UploadTickets:
    return UploadTickets(clients.get("dynamodb"), get_settings().upload_tickets_table)


@cache
def s3() -> Any:
    """SigV4 always: presigned URLs for SSE-KMS objects need it (boto3 would presign with SigV2 in some regions)."""
    import boto3
    from botocore.config import Config

    settings = get_settings()
    config = Config(
        signature_version="s3v4",
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.default_timeout_seconds,
        retries={"mode": "standard"},
    )
    return boto3.client("s3", config=config)


def stepfunctions() -> Any:
    return clients.get("stepfunctions")


def sagemaker_runtime() -> Any:
    return clients.get("sagemaker-runtime")


def sagemaker() -> Any:
    return clients.get("sagemaker")
