"""Metric data for the embedded CloudWatch, batched: `put(namespace, datum)` only queues; a background thread
sends what is queued every `flush_seconds` (PutMetricData, at most 1000 data per call, as AWS allows), and
`stop()` sends the rest. Nobody's request waits for CloudWatch.

    sink = MetricSink(cloudwatch_client)
    sink.start()
    sink.put("AWS/SageMaker", {"MetricName": "Invocations", "Dimensions": [...], "Value": 1, "Unit": "None"})
    sink.stop()
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger("sluice_local.metric_sink")

FLUSH_SECONDS = 1.0
MAX_DATA_PER_CALL = 1000


class MetricSink:
    def __init__(self, cloudwatch: Any, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.cloudwatch = cloudwatch
        self.flush_seconds = flush_seconds
        self._queued: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sources: list[Callable[[], None]] = []

    def add_source(self, publish: Callable[[], None]) -> None:
        """`publish()` is called before each flush, to put what it aggregated since the last one."""
        self._sources.append(publish)

    def put(self, namespace: str, datum: dict[str, Any]) -> None:
        with self._lock:
            self._queued[namespace].append(datum)

    def start(self) -> MetricSink:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="metric-sink", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)
        self.flush()

    def flush(self) -> None:
        for publish in list(self._sources):
            publish()
        with self._lock:
            queued, self._queued = self._queued, defaultdict(list)
        for namespace, data in queued.items():
            for start in range(0, len(data), MAX_DATA_PER_CALL):
                try:
                    self.cloudwatch.put_metric_data(
                        Namespace=namespace, MetricData=data[start : start + MAX_DATA_PER_CALL]
                    )
                except (BotoCoreError, ClientError) as exc:
                    # Metrics are best effort, as on AWS: a lost batch never fails the request that made it.
                    log.warning("could not put %d metric data in %s: %s", len(data), namespace, exc)

    def _run(self) -> None:
        while not self._stopping.wait(self.flush_seconds):
            self.flush()
