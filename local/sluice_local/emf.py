"""The in-process functions' EMF metrics, extracted into the embedded CloudWatch as CloudWatch Logs extracts them.

On Lambda, Powertools prints each metric set as one EMF JSON line on stdout and CloudWatch turns the line into
metrics. Locally nothing reads stdout, so `install(sink)` wraps the `print` Powertools' metric modules call (the
one place every flush ends: `Metrics.flush_metrics`, `single_metric`, the 100-metric overflow): the line is still
printed, and `extract(line)` turns it into metric data for the sink (metric_sink, batched in the background).

The extraction follows the EMF specification: for each `_aws.CloudWatchMetrics` directive, each metric of its
`Metrics` (Name, Unit) with each dimension set of its `Dimensions` (the keys' values from the root), the value
(or array of values) at the root under the metric's name, at `_aws.Timestamp` (epoch milliseconds). A dimension
set naming a key the document lacks, or a value that is not a number, is dropped, as CloudWatch drops it.
"""

from __future__ import annotations

import builtins
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sluice_local.metric_sink import MetricSink

# Powertools 3's metric modules that print EMF (their module-level `print` is what is wrapped).
_MODULES = (
    "aws_lambda_powertools.metrics.base",
    "aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch",
)


def extract(document: Any) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, PutMetricData datum) for each metric an EMF document holds; [] if it is not EMF."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return []
    if not isinstance(document, dict) or not isinstance(document.get("_aws"), dict):
        return []
    meta = document["_aws"]
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        return []
    try:
        timestamp = datetime.fromtimestamp(float(meta["Timestamp"]) / 1000, UTC)
    except (KeyError, TypeError, ValueError):
        timestamp = datetime.now(UTC)
    data = []
    for directive in directives:
        namespace = directive.get("Namespace")
        if not isinstance(namespace, str) or not namespace:
            continue
        dimension_sets = [
            [{"Name": key, "Value": str(document[key])} for key in keys]
            for keys in directive.get("Dimensions") or [[]]
            if isinstance(keys, list) and all(isinstance(document.get(key), str) for key in keys)
        ]
        for metric in directive.get("Metrics") or []:
            name = metric.get("Name") if isinstance(metric, dict) else None
            values = _values(document.get(name)) if name else []
            if not values:
                continue
            for dimensions in dimension_sets:
                datum: dict[str, Any] = {
                    "MetricName": name,
                    "Dimensions": dimensions,
                    "Timestamp": timestamp,
                    "Unit": metric.get("Unit") or "None",
                }
                if len(values) == 1:
                    datum["Value"] = values[0]
                else:
                    datum["Values"] = values
                if metric.get("StorageResolution") == 1:
                    datum["StorageResolution"] = 1
                data.append((namespace, datum))
    return data


def _values(raw: Any) -> list[float]:
    items = raw if isinstance(raw, list) else [raw]
    numbers = [float(item) for item in items if isinstance(item, int | float) and not isinstance(item, bool)]
    return [number for number in numbers if math.isfinite(number)]


def install(sink: MetricSink) -> Callable[[], None]:
    """Route Powertools' EMF lines to `sink` as well as to stdout; returns the undo."""
    import importlib

    modules = [importlib.import_module(name) for name in _MODULES]

    def emf_print(*args: Any, **kwargs: Any) -> None:
        builtins.print(*args, **kwargs)
        if len(args) == 1 and isinstance(args[0], str) and '"_aws"' in args[0]:
            for namespace, datum in extract(args[0]):
                sink.put(namespace, datum)

    for module in modules:
        module.print = emf_print  # type: ignore[attr-defined]

    def undo() -> None:
        for module in modules:
            module.__dict__.pop("print", None)

    return undo
