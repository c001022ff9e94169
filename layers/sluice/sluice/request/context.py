"""Per-request facts every inference operation needs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sluice.auth.caller import Caller


@dataclass
class RequestContext:
    request_id: str
    caller: Caller
    started: float = field(default_factory=time.perf_counter)
    # Set once the model is resolved, so errors are counted against it.
    model: str | None = None
    provider: str | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000
