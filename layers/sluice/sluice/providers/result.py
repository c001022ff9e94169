"""What a backend call returns, whatever the backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendResult:
    # Raw bytes for pass-through calls; the parsed response for structured APIs (Converse).
    body: bytes | dict[str, Any]
    content_type: str
    backend_latency_ms: float
    variant: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
