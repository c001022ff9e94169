"""After a successful backend call: latency, cost, metrics and one log line (no bodies unless debugging)."""

from __future__ import annotations

from dataclasses import dataclass

from sluice.catalog.models import ModelEntry
from sluice.inference.confidence import ConfidenceCount
from sluice.inference.cost import estimate_cost
from sluice.providers.result import BackendResult
from sluice.request.context import RequestContext
from sluice.telemetry import logger, record_invocation


@dataclass(frozen=True)
class Accounted:
    latency_ms: float
    backend_latency_ms: float
    estimated_cost_usd: float


def account(
    ctx: RequestContext,
    name: str,
    entry: ModelEntry,
    result: BackendResult,
    confidence: ConfidenceCount | None = None,
) -> Accounted:
    """`confidence`: the answer's prediction counts when its entry declares where confidence lives."""
    cost = estimate_cost(entry, result)
    latency_ms = ctx.elapsed_ms()
    predictions = confidence.predictions if confidence else 0
    low = confidence.low if confidence else 0
    record_invocation(
        model=name,
        provider=entry.backend.provider,
        variant=result.variant,
        latency_ms=latency_ms,
        backend_latency_ms=result.backend_latency_ms,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        cost_usd=cost,
        predictions=predictions,
        low_confidence_predictions=low,
    )
    # Counts only: the confidences themselves are part of the answer, which stays out of the logs.
    confidence_fields = {"predictions": predictions, "low_confidence_predictions": low} if confidence else {}
    logger.info(
        "inference served",
        extra={
            "model": name,
            "provider": entry.backend.provider,
            "variant": result.variant,
            "latency_ms": round(latency_ms, 2),
            "backend_latency_ms": round(result.backend_latency_ms, 2),
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "estimated_cost_usd": cost,
            **confidence_fields,
        },
    )
    return Accounted(round(latency_ms, 3), round(result.backend_latency_ms, 3), cost)
