"""SageMaker's per-variant endpoint metrics, published by the local SageMaker runtime as SageMaker publishes them:
namespace `AWS/SageMaker`, dimensions EndpointName + VariantName, for every InvokeEndpoint routed to a variant:

- `Invocations`: 1 per call (errors included);
- `Invocation4XXErrors` / `Invocation5XXErrors`: 1 when the model answered 4xx / 5xx (a model that cannot be
  reached or timed out counts as 5xx), else 0, so their Average is the error rate, as on AWS;
- `ModelLatency` (microseconds): from sending the request to the model to its answer (not recorded when the
  model never answered); `OverheadLatency` (microseconds): the rest of the runtime's time on the call.

Recorded on the request path into memory only; each flush of the sink (metric_sink) sends one datum per metric
and variant, values with counts, so a percentile sees every call's latency.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sluice_local.metric_sink import MetricSink

NAMESPACE = "AWS/SageMaker"
# PutMetricData takes at most 150 distinct values per datum.
MAX_VALUES = 150


@dataclass
class _Variant:
    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    model_us: list[float] = field(default_factory=list)
    overhead_us: list[float] = field(default_factory=list)


class RuntimeMetrics:
    def __init__(self, sink: MetricSink) -> None:
        self.sink = sink
        self._variants: dict[tuple[str, str], _Variant] = defaultdict(_Variant)
        self._lock = threading.Lock()

    def record(self, endpoint: str, variant: str, status: int, model_us: float | None, overhead_us: float) -> None:
        """One invocation of `variant`: `status` is the model's HTTP status (5xx when it never answered)."""
        with self._lock:
            counts = self._variants[(endpoint, variant)]
            counts.invocations += 1
            counts.errors_4xx += 400 <= status < 500
            counts.errors_5xx += status >= 500
            if model_us is not None:
                counts.model_us.append(model_us)
            counts.overhead_us.append(overhead_us)

    def publish(self) -> None:
        """Hand what was recorded since the last call to the sink (called before each of its flushes)."""
        with self._lock:
            recorded, self._variants = self._variants, defaultdict(_Variant)
        now = datetime.now(UTC)
        for (endpoint, variant), counts in recorded.items():
            dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]

            def put(
                name: str, values: Counter[float], unit: str, dimensions: list[dict[str, str]] = dimensions
            ) -> None:
                items = sorted((value, count) for value, count in values.items() if count > 0)
                for start in range(0, len(items), MAX_VALUES):
                    chunk = items[start : start + MAX_VALUES]
                    self.sink.put(
                        NAMESPACE,
                        {
                            "MetricName": name,
                            "Dimensions": dimensions,
                            "Timestamp": now,
                            "Values": [value for value, _ in chunk],
                            "Counts": [float(count) for _, count in chunk],
                            "Unit": unit,
                        },
                    )

            ok = counts.invocations
            put("Invocations", Counter({1.0: ok}), "None")
            put("Invocation4XXErrors", Counter({1.0: counts.errors_4xx, 0.0: ok - counts.errors_4xx}), "None")
            put("Invocation5XXErrors", Counter({1.0: counts.errors_5xx, 0.0: ok - counts.errors_5xx}), "None")
            if counts.model_us:
                put("ModelLatency", Counter(counts.model_us), "Microseconds")
            put("OverheadLatency", Counter(counts.overhead_us), "Microseconds")


def attach(sink: MetricSink) -> RuntimeMetrics:
    """RuntimeMetrics whose records reach `sink` at each of its flushes."""
    metrics = RuntimeMetrics(sink)
    sink.add_source(metrics.publish)
    return metrics
