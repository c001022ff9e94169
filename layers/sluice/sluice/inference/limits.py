"""Per-model limits: payload size, input and output tokens, timeout (catalog value or stack default)."""

from __future__ import annotations

import math
from typing import Any

from sluice.catalog.models import ModelEntry
from sluice.errors import PayloadTooLarge, TokenLimitExceeded
from sluice.settings import get_settings


def timeout_seconds(entry: ModelEntry) -> float:
    return entry.limits.timeout_seconds or get_settings().default_timeout_seconds


def check_payload(name: str, entry: ModelEntry, size: int) -> None:
    limit = entry.limits.max_payload_bytes or get_settings().default_max_payload_bytes
    if size > limit:
        raise PayloadTooLarge(
            f"The request body is {size} bytes; model '{name}' accepts at most {limit} bytes in a synchronous "
            f"call. Send larger inputs through async inference (POST /v1/models/{name}/async).",
            details={"size_bytes": size, "limit_bytes": limit},
        )


def estimate_tokens(text_chars: int) -> int:
    """No tokenizer runs in Lambda: a characters-per-token ratio (a setting) gives the estimate."""
    return math.ceil(text_chars / get_settings().chars_per_token)


def check_input_tokens(name: str, entry: ModelEntry, text_chars: int, param: str = "messages") -> int:
    """`param` names the request field holding the input (messages, input, body) in the error."""
    estimate = estimate_tokens(text_chars)
    cap = entry.limits.max_input_tokens
    if cap is not None and estimate > cap:
        raise TokenLimitExceeded(
            f"The input is about {estimate} tokens; model '{name}' accepts at most {cap} input tokens. "
            "Shorten the input.",
            param=param,
            details={"estimated_input_tokens": estimate, "max_input_tokens": cap},
        )
    return estimate


def output_token_cap(name: str, entry: ModelEntry, requested: int | None, param: str) -> int | None:
    """The max output tokens to send: the caller's request if within the cap, else the cap itself."""
    cap = entry.limits.max_output_tokens
    if cap is not None and requested is not None and requested > cap:
        raise TokenLimitExceeded(
            f"{param}={requested} is above model '{name}''s limit of {cap} output tokens. Ask for at most {cap}.",
            param=param,
            details={"requested_output_tokens": requested, "max_output_tokens": cap},
        )
    return requested if requested is not None else cap


# Where native request bodies of common model families ask for an output length.
_OUTPUT_TOKEN_FIELDS = (
    ("max_tokens",),
    ("maxTokens",),
    ("max_gen_len",),
    ("max_new_tokens",),
    ("inferenceConfig", "maxTokens"),
    ("textGenerationConfig", "maxTokenCount"),
    ("parameters", "max_new_tokens"),
)


def requested_output_tokens(body: Any) -> tuple[str, int] | None:
    if not isinstance(body, dict):
        return None
    for path in _OUTPUT_TOKEN_FIELDS:
        value: Any = body
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            return ".".join(path), value
    return None
