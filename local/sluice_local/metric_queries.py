"""CloudWatch GetMetricData as AWS answers it, for what the deployment guards ask (moto 5.2 does not):

- a query with dimensions matches only its own namespace (moto drops the namespace then, so an
  `Invocations` of `AWS/SageMaker` and one of the `Sluice` namespace with the same dimensions mix);
- percentile statistics (`p99`, `p50.5`) are computed from the raw values put in the period, by the
  nearest-rank method (moto answers them with a 500). Values put as statistic sets have no raw values
  and take no part in a percentile, as on AWS.

Only metric-stat queries are scoped per namespace: a request that also holds metric math runs as
moto runs it. Installed by `emulator.start_moto`; `install()` returns the undo.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from typing import Any

_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?|100)$")
# The per-query view of the backend's metrics is an attribute on the (process-wide) backend.
_scoped = threading.Lock()


def percentile(values: list[float], rank: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, math.ceil(rank / 100 * len(ordered)) - 1)
    return ordered[min(index, len(ordered) - 1)]


def install(patched_moto: str) -> Callable[[], None]:
    import moto as moto_package
    from moto.cloudwatch import models

    if not moto_package.__version__.startswith(patched_moto):
        raise RuntimeError(
            f"sluice_local patches moto {patched_moto}x's GetMetricData; "
            f"re-check it for moto {moto_package.__version__}"
        )
    statistics_class, backend_class = models.Statistics, models.CloudWatchBackend
    original_statistic = statistics_class.get_statistics_for_type
    original_query = backend_class.get_metric_data

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        match = _PERCENTILE.match(stat)
        if match is None:
            return original_statistic(self, stat)
        return percentile(self.metric_single_values_list, float(match.group(1)))

    def get_metric_data(self: Any, queries: list[dict[str, Any]], start_time: Any, end_time: Any, **kwargs: Any) -> Any:
        if not queries or not all("MetricStat" in query for query in queries):
            return original_query(self, queries, start_time, end_time, **kwargs)
        results: list[Any] = []
        with _scoped:
            every_metric = self.get_all_metrics
            try:
                for query in queries:
                    namespace = query["MetricStat"]["Metric"]["Namespace"]
                    # Seen by this one query only: the metrics of its own namespace.
                    self.get_all_metrics = lambda ns=namespace: [m for m in every_metric() if m.namespace == ns]
                    results.extend(original_query(self, [query], start_time, end_time, **kwargs))
            finally:
                self.__dict__.pop("get_all_metrics", None)
        return results

    statistics_class.get_statistics_for_type = get_statistics_for_type
    backend_class.get_metric_data = get_metric_data

    def undo() -> None:
        statistics_class.get_statistics_for_type = original_statistic
        backend_class.get_metric_data = original_query

    return undo
