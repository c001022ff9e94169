"""boto3 clients, built once per container and per timeout, on first use.

Lazily built so a route that never calls a backend (health, model listing) pays nothing for it.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def get(service: str, timeout_seconds: float | None = None) -> Any:
    import boto3
    from botocore.config import Config

    from sluice.settings import get_settings

    settings = get_settings()
    config = Config(
        read_timeout=timeout_seconds or settings.default_timeout_seconds,
        connect_timeout=settings.connect_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": settings.backend_max_attempts},
        tcp_keepalive=True,
    )
    return boto3.client(service, config=config)
