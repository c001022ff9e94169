"""What the notifying functions need from AWS: SNS clients per region, each caller's webhook secret
and each caller's allowed callback topics (both read through per-container caches with a TTL)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sluice import clients
from sluice.jobs import callback_topics as _topics
from sluice.jobs.webhook_secrets import SecretCache
from sluice.settings import get_settings


def sns_in(region: str) -> Any:
    """A caller's topic may live in another region than the function: one client per region, built once."""
    return clients.get("sns", region=region)


def _ssm() -> Any:
    # The same SSM client the callback topics are read with.
    return clients.get("ssm")


@cache
def _secrets(path: str, ttl_seconds: int) -> SecretCache:
    return SecretCache(_ssm, path, ttl_seconds)


def webhook_secret(caller: str) -> str | None:
    """The caller's signing secret, None when it has none: one SSM read per caller and TTL."""
    settings = get_settings()
    return _secrets(settings.webhook_secrets_path, settings.webhook_secret_ttl_seconds)(caller)


def callback_topics(caller: str) -> tuple[str, ...]:
    return _topics.caller_patterns(caller)


def reset() -> None:
    """Tests and local mode: forget cached clients, secrets and topics."""
    _secrets.cache_clear()
    _topics.reset()
