"""Each caller's webhook signing secret: an SSM SecureString under the stack's webhook-secrets path.

The parameter name ends in the SHA-256 hex digest of the caller identity: injective for any identity
(tenant id or principal ARN, whatever characters it holds) and always a valid SSM name. tools/keys.py
`webhook-secret` creates and rotates them; the notifier reads them through `SecretCache`.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

SECRET_PREFIX = "whsec_"  # noqa: S105 - a label that marks the value, not a secret


class SecretUnavailable(Exception):
    """SSM could not be read this time (throttled, unavailable): the delivery is retried."""


def caller_segment(caller: str) -> str:
    return hashlib.sha256(caller.encode()).hexdigest()


def secret_parameter_name(path: str, caller: str) -> str:
    return f"{path.rstrip('/')}/{caller_segment(caller)}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def put_secret(ssm: Any, path: str, caller: str, *, rotate: bool, kms_key_id: str | None = None) -> tuple[str, str]:
    """Creates (or, with rotate, replaces) the caller's secret; returns (parameter name, secret).
    Without rotate an existing secret is an error, so a second `create` never silently breaks receivers."""
    name = secret_parameter_name(path, caller)
    secret = new_secret()
    request: dict[str, Any] = {
        "Name": name,
        "Value": secret,
        "Type": "SecureString",
        "Overwrite": rotate,
        "Description": f"Sluice webhook signing secret of caller {caller}"[:1024],
    }
    if kms_key_id:
        request["KeyId"] = kms_key_id
    try:
        ssm.put_parameter(**request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ParameterAlreadyExists":
            raise ValueError(
                f"caller {caller} already has a webhook secret ({name}); pass --rotate to replace it"
            ) from None
        raise
    return name, secret


class SecretCache:
    """Per caller, trusted for ttl_seconds, misses included (a caller without a secret costs one SSM
    read per TTL, not one per webhook). `None` means the caller has no secret."""

    def __init__(
        self, ssm: Callable[[], Any], path: str, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ssm = ssm
        self._path = path
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[str, tuple[float, str | None]] = {}

    def __call__(self, caller: str) -> str | None:
        now = self._clock()
        cached = self._entries.get(caller)
        if cached and cached[0] > now:
            return cached[1]
        name = secret_parameter_name(self._path, caller)
        try:
            value: str | None = self._ssm().get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ParameterNotFound":
                raise SecretUnavailable(f"the webhook secret {name} could not be read ({exc})") from exc
            value = None
        except BotoCoreError as exc:
            raise SecretUnavailable(f"the webhook secret {name} could not be read ({exc})") from exc
        self._entries[caller] = (now + self._ttl, value)
        return value
