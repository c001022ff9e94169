"""Idempotent job creation: a request retried with the same Idempotency-Key gets the first job back.

Powertools idempotency over DynamoDB (settings.idempotency_table). The key is the caller, the route
and the header's value; the request's payload is validated, so reusing a key for a different request
is an error instead of a silent replay. Without the header nothing is remembered.

With the header the job id is derived from (caller, route, key) too (job_id_for), so a retry that
runs `create` again after the first attempt died (its in-progress record expired) lands on the same
job, and every step of `create` is written to be safe to repeat.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from sluice.errors import IdempotencyKeyInProgress, IdempotencyKeyReused, InvalidRequest
from sluice.settings import get_settings

HEADER = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


@cache
def _persistence(table: str) -> Any:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from sluice import clients

    return DynamoDBPersistenceLayer(table_name=table, boto3_client=clients.get("dynamodb"))


def job_id_for(caller: str, route: str, key: str, generation: int = 0) -> str:
    """job-<32 hex> (JOB_ID_PATTERN) from sha256 over the length-prefixed parts: no two different
    (caller, route, key) share an encoding, so no two share a job id. `generation` counts the jobs of a
    key whose start was refused (a retry of those gets a new job, as without a key)."""
    digest = hashlib.sha256()
    for part in (caller, route, key, str(generation)):
        data = part.encode()
        digest.update(len(data).to_bytes(4, "big") + data)
    return f"job-{digest.hexdigest()[:32]}"


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not _VALID_KEY.match(key):
        raise InvalidRequest(f"{HEADER} must be 1-255 printable ASCII characters without spaces.", param=HEADER)
    return key


def once(
    *,
    key: str | None,
    caller: str,
    route: str,
    payload: dict[str, Any],
    create: Callable[[], str],
    lambda_context: Any = None,
) -> tuple[str, bool]:
    """Run `create` (which returns a job id) at most once per (caller, route, key).

    Returns the job id and whether it is a replay of an earlier request.
    """
    if check_key(key) is None:
        return create(), False
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyValidationError,
    )

    settings = get_settings()
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="payload",
        expires_after_seconds=settings.idempotency_seconds,
        # A replay is marked, so the answer can say so.
        response_hook=lambda response, _record: {**response, "replayed": True},
    )
    if lambda_context is not None and hasattr(lambda_context, "get_remaining_time_in_millis"):
        # An attempt cut short by the Lambda timeout stops blocking the key when the invocation ends.
        config.register_lambda_context(lambda_context)

    def run(request: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 - Powertools hashes it
        return {"job_id": create()}

    idempotent = idempotent_function(
        run,
        data_keyword_argument="request",
        persistence_store=_persistence(settings.idempotency_table),
        config=config,
        key_prefix="sluice-job-create",
    )
    try:
        answer = idempotent(request={"key": [caller, route, key], "payload": payload})
    except IdempotencyValidationError:
        raise IdempotencyKeyReused(
            f"{HEADER} '{key}' was already used for a different request to {route}. "
            "Use a new key for a new request; retry with the same key only with the same request.",
            param=HEADER,
        ) from None
    except IdempotencyAlreadyInProgressError:
        raise IdempotencyKeyInProgress(
            f"A request with {HEADER} '{key}' is still being processed. Retry in a few seconds to get its job.",
            param=HEADER,
            headers={"Retry-After": str(settings.throttle_retry_after_seconds)},
        ) from None
    return answer["job_id"], bool(answer.get("replayed"))
