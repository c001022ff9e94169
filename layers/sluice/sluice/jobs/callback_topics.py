"""Which SNS topics each caller's job callbacks may publish to.

One JSON document in SSM (settings.callback_topics_parameter, `tools/keys.py callback-topics`):
    {"version": 1, "callers": {"team-risk": ["arn:aws:sns:us-east-1:123456789012:team-risk-*"]}}
keys are exact caller identities (tenant ids, principal ARNs), values fnmatch patterns over topic ARNs.
A topic is used only when it matches the caller's own patterns AND the stack's ceiling
(settings.callback_topic_arn_patterns, which also scopes the notifier's sns:Publish), so one tenant
cannot have Sluice publish into a topic the platform allowed for another.

The document is read at most once per settings.callback_topics_ttl_seconds per container (misses too).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sluice.settings import Settings, get_settings
from sluice.telemetry import logger


class CallbackTopics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=1, ge=1, le=1)
    callers: dict[str, list[str]] = {}

    def patterns_for(self, caller: str) -> tuple[str, ...]:
        return tuple(self.callers.get(caller, ()))


def matches(topic_arn: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(fnmatch.fnmatchcase(topic_arn, pattern) for pattern in patterns)


def refusal(topic_arn: str, caller_patterns: tuple[str, ...], settings: Settings) -> str | None:
    """Why this caller may not use this topic, or None."""
    if not matches(topic_arn, caller_patterns):
        return (
            "this topic is not among the callback topics allowed for this caller; the platform team allows "
            "topics per caller with `tools/keys.py callback-topics --tenant <caller> --allow <ARN pattern>`"
        )
    if not matches(topic_arn, settings.callback_topic_arn_patterns):
        return (
            "this topic is outside the callback topics the platform allows at all "
            "(stack parameter CallbackTopicArnPatterns); ask the platform team to add it"
        )
    return None


def parse(text: str | None) -> CallbackTopics:
    if not text:
        return CallbackTopics()
    return CallbackTopics.model_validate(json.loads(text))


class TopicsCache:
    """`cache(caller)` -> that caller's patterns. A broken document allows nothing (logged), never more."""

    def __init__(
        self, ssm: Callable[[], Any], name: str, ttl_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ssm = ssm
        self._name = name
        self._ttl = ttl_seconds
        self._clock = clock
        self._loaded: tuple[float, CallbackTopics] | None = None

    def document(self) -> CallbackTopics:
        now = self._clock()
        if self._loaded and self._loaded[0] > now:
            return self._loaded[1]
        document = CallbackTopics()
        if self._name:
            try:
                text = self._ssm().get_parameter(Name=self._name)["Parameter"]["Value"]
                document = parse(text)
            except (ValueError, ValidationError) as exc:
                problem = {"parameter": self._name, "problem": str(exc)[:500]}
                logger.error("callback topics document is invalid", extra=problem)
            except Exception as exc:  # noqa: BLE001 - unreadable: refuse SNS callbacks until the next read
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                if code != "ParameterNotFound":
                    logger.error("callback topics document unreadable", extra={"parameter": self._name, "code": code})
        self._loaded = (now + self._ttl, document)
        return document

    def __call__(self, caller: str) -> tuple[str, ...]:
        return self.document().patterns_for(caller)


@cache
def _cache_for(name: str, ttl_seconds: float) -> TopicsCache:
    def ssm() -> Any:
        from sluice import clients

        return clients.get("ssm")

    return TopicsCache(ssm, name, ttl_seconds)


def caller_patterns(caller: str) -> tuple[str, ...]:
    """This container's cached view of the document the settings name."""
    settings = get_settings()
    return _cache_for(settings.callback_topics_parameter, settings.callback_topics_ttl_seconds)(caller)


reset = _cache_for.cache_clear


def check_callback_topic(caller: str, topic_arn: str | None, field: str) -> None:
    """At submission: a caller naming a topic it may not use gets a 422 naming the field."""
    if not topic_arn:
        return
    reason = refusal(topic_arn, caller_patterns(caller), get_settings())
    if reason:
        from sluice.request.validation import validation_failed

        raise validation_failed([{"field": field, "message": reason}])
