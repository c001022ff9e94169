"""The one settings object: every tunable comes from an environment variable set in template.yaml.

Defaults mirror ../shared/DOMAIN.md; a platform team changes them through stack parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    catalog_parameter: str = field(default_factory=lambda: _env("SLUICE_CATALOG_PARAMETER", "/sluice/catalog"))
    # Seconds a loaded catalog is trusted before SSM is asked again (no per-request reads).
    catalog_ttl_seconds: int = field(default_factory=lambda: int(_env("SLUICE_CATALOG_TTL_SECONDS", "300")))
    api_keys_table: str = field(default_factory=lambda: _env("SLUICE_API_KEYS_TABLE", "sluice-api-keys"))
    # Debug only: when on, request and response bodies are logged.
    log_bodies: bool = field(default_factory=lambda: _flag("SLUICE_LOG_BODIES", False))
    # Input tokens are estimated before the call (no tokenizer in Lambda) as ceil(chars / this).
    chars_per_token: float = field(default_factory=lambda: float(_env("SLUICE_CHARS_PER_TOKEN", "4")))
    # Retry-After sent with a 429 when the backend throttles.
    throttle_retry_after_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_THROTTLE_RETRY_AFTER_SECONDS", "2"))
    )
    # Defaults for catalog entries that leave a limit out.
    default_max_payload_bytes: int = field(
        default_factory=lambda: int(_env("SLUICE_DEFAULT_MAX_PAYLOAD_BYTES", str(6 * 1024 * 1024)))
    )
    default_timeout_seconds: float = field(default_factory=lambda: float(_env("SLUICE_DEFAULT_TIMEOUT_SECONDS", "25")))
    connect_timeout_seconds: float = field(default_factory=lambda: float(_env("SLUICE_CONNECT_TIMEOUT_SECONDS", "2")))
    # Attempts per backend call, first one included: 2 absorbs a transient throttle without eating
    # API Gateway's 29 s budget.
    backend_max_attempts: int = field(default_factory=lambda: int(_env("SLUICE_BACKEND_MAX_ATTEMPTS", "2")))
    metrics_namespace: str = field(default_factory=lambda: _env("POWERTOOLS_METRICS_NAMESPACE", "Sluice"))


@cache
def get_settings() -> Settings:
    return Settings()
