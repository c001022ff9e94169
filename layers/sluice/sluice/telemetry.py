"""Logger, tracer and metrics shared by every function (service name and namespace come from env)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from sluice.settings import get_settings

logger = Logger()
tracer = Tracer()
metrics = Metrics()


def record_invocation(
    *,
    model: str,
    provider: str,
    variant: str | None,
    latency_ms: float,
    backend_latency_ms: float | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cost_usd: float | None,
    predictions: int = 0,
    low_confidence_predictions: int = 0,
) -> None:
    """One successful inference: flushed with the request's metric set when the handler returns.

    `predictions` / `low_confidence_predictions`: the answer's predictions whose confidence was read, and
    those below the threshold (sluice.inference.confidence). Same dimensions as Invocations, so the
    deployment guard reads them per variant; nothing is added when no confidence was read."""
    metrics.add_dimension("model", model)
    metrics.add_dimension("provider", provider)
    metrics.add_dimension("variant", variant or "-")
    metrics.add_metric("Invocations", MetricUnit.Count, 1)
    metrics.add_metric("Latency", MetricUnit.Milliseconds, latency_ms)
    if backend_latency_ms is not None:
        metrics.add_metric("BackendLatency", MetricUnit.Milliseconds, backend_latency_ms)
    if input_tokens is not None:
        metrics.add_metric("InputTokens", MetricUnit.Count, input_tokens)
    if output_tokens is not None:
        metrics.add_metric("OutputTokens", MetricUnit.Count, output_tokens)
    if cost_usd is not None:
        metrics.add_metric("EstimatedCostUSD", MetricUnit.NoUnit, cost_usd)
    if predictions:
        metrics.add_metric("Predictions", MetricUnit.Count, predictions)
        metrics.add_metric("LowConfidencePredictions", MetricUnit.Count, low_confidence_predictions)


def record_error(*, code: str, status: int, model: str | None, provider: str | None) -> None:
    """A failed request, counted by error class so a dashboard separates throttles from model faults."""
    with single_metric(
        name="Errors",
        unit=MetricUnit.Count,
        value=1,
        namespace=get_settings().metrics_namespace,
    ) as metric:
        metric.add_dimension("model", model or "-")
        metric.add_dimension("provider", provider or "-")
        metric.add_dimension("error_code", code)
        metric.add_dimension("status_class", f"{status // 100}xx")


def record_catalog_error() -> None:
    with single_metric(
        name="CatalogLoadErrors", unit=MetricUnit.Count, value=1, namespace=get_settings().metrics_namespace
    ):
        pass
