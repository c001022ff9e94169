"""What the notifying functions need from AWS: SNS clients per region, and the webhook secret."""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities import parameters

from sluice.settings import get_settings


@cache
def sns_in(region: str) -> Any:
    """A caller's topic may live in another region than the function: one client per region, built once."""
    return boto3.client("sns", region_name=region)


def webhook_secret() -> str:
    # Powertools caches it for the TTL: one SSM read per container and TTL, not one per webhook.
    settings = get_settings()
    return parameters.get_parameter(
        settings.webhook_secret_parameter, decrypt=True, max_age=settings.webhook_secret_ttl_seconds
    )
