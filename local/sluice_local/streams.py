"""DynamoDB stream records delivered to Lambda event source mappings the way Lambda does it.

moto 5.2.5 calls the mapped function synchronously inside the write request (StreamShard.add ->
send_dynamodb_items), sends every record accumulated since the last truthy answer again, and
ignores FilterCriteria, retries, bisection and the OnFailure destination. Here, per mapping:

- records are queued (in stream order) and delivered from a background thread, so a write returns
  before its record is processed, as on AWS;
- batches of at most BatchSize records; records the mapping's FilterCriteria do not match are
  dropped before the call (EventBridge patterns: exact values, lists of them, anything-but);
- a function error retries the batch (bisected first with BisectBatchOnFunctionError); a partial
  batch response (ReportBatchItemFailures) retries from the first failed record on; at most
  MaximumRetryAttempts retries and MaximumRecordAgeInSeconds of age (-1: no limit), after which
  the batch's description goes to the DestinationConfig.OnFailure SQS queue and delivery goes on.

The records stay in moto's shard too (GetRecords reads them). Retries wait a short, growing pause
(Lambda's own is not documented as a number; locally it is kept short).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sluice_local.shared_patch import SharedPatch

logger = logging.getLogger(__name__)

_MISSING = object()
_RETRY_PAUSE_SECONDS = 0.2
_RETRY_PAUSE_MAX_SECONDS = 2.0
_deliveries_lock = threading.Lock()
_deliveries: dict[str, StreamDelivery] = {}


def install(patched_moto: str) -> Callable[[], None]:
    """Patch moto's stream shard (process-wide, nested installs share it); returns the undo."""
    import moto as moto_package

    if not moto_package.__version__.startswith(patched_moto):
        # The patch replaces moto 5.2's StreamShard.add: a new moto must be re-checked.
        raise RuntimeError(
            f"sluice_local patches moto {patched_moto}x's DynamoDB stream delivery; "
            f"re-check it for moto {moto_package.__version__}"
        )
    return _shared.install()


def _patch() -> Callable[[], None]:
    from moto.dynamodb.models.table import StreamRecord, StreamShard

    original = StreamShard.add

    def add(self: Any, old: Any, new: Any) -> None:
        stream_type = self.table.stream_specification["StreamViewType"]
        event_name = "INSERT" if old is None else "REMOVE" if new is None else "MODIFY"
        record = StreamRecord(
            self.table, stream_type, event_name, old, new, len(self.items) + self.starting_sequence_number
        )
        self.items.append(record)
        region = self.table.region_name
        for esm in list(self.table.lambda_event_source_mappings.values()):
            if esm.enabled:
                delivery_for(esm, self.account_id, region, self.id).put(lambda_record(record.to_json(), esm, region))

    StreamShard.add = add

    def undo() -> None:
        StreamShard.add = original
        with _deliveries_lock:
            deliveries = list(_deliveries.values())
            _deliveries.clear()
        for delivery in deliveries:
            delivery.stop()

    return undo


def lambda_record(record: dict[str, Any], esm: Any, region: str) -> dict[str, Any]:
    """A stream record as Lambda hands it to a function (epoch creation time, the mapping's stream ARN)."""
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        change["ApproximateCreationDateTime"] = int(created.replace(tzinfo=created.tzinfo or UTC).timestamp())
    return {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record["eventVersion"],
        "eventSource": record["eventSource"],
        "awsRegion": region,
        "dynamodb": change,
        "eventSourceARN": esm.event_source_arn,
    }


def delivery_for(esm: Any, account_id: str, region: str, shard_id: str) -> StreamDelivery:
    with _deliveries_lock:
        delivery = _deliveries.get(esm.uuid)
        if delivery is None:
            delivery = _deliveries[esm.uuid] = StreamDelivery(esm, account_id, region, shard_id)
        return delivery


def wait_until_idle(timeout: float = 30.0) -> bool:
    """Every queued record delivered (or parked): tests and the load script wait on this."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _deliveries_lock:
            busy = [delivery for delivery in _deliveries.values() if not delivery.idle()]
        if not busy:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------- one mapping's delivery
class StreamDelivery:
    def __init__(self, esm: Any, account_id: str, region: str, shard_id: str) -> None:
        self.esm = esm
        self.account_id = account_id
        self.region = region
        self.shard_id = shard_id
        self.batch_size = int(esm.batch_size or 100)
        self.filters = [json.loads(entry["Pattern"]) for entry in (esm.filter_criteria or {}).get("Filters", [])]
        self.max_retries = int(esm.max_retry_attempts if esm.max_retry_attempts is not None else -1)
        self.max_age = int(esm.max_record_age if esm.max_record_age is not None else -1)
        self.bisect = str(esm.bisect_on_error).lower() == "true"
        self.partial = "ReportBatchItemFailures" in (esm.function_response_types or [])
        self.on_failure = ((esm.destination_config or {}).get("OnFailure") or {}).get("Destination")
        self._queue: deque[dict[str, Any]] = deque()
        self._condition = threading.Condition()
        self._stopped = False
        self._working = False
        self._thread = threading.Thread(target=self._run, name=f"stream-delivery-{esm.uuid[:8]}", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        with self._condition:
            self._queue.append(record)
            self._condition.notify()

    def idle(self) -> bool:
        with self._condition:
            return not self._queue and not self._working

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._working = True
            try:
                batch = [record for record in batch if self.matches(record)]
                if batch:
                    self._deliver(batch)
            except Exception:  # the delivery thread must outlive any one batch
                logger.exception("stream delivery to %s failed", self.esm.function_arn)
            finally:
                with self._condition:
                    self._working = False

    def matches(self, record: dict[str, Any]) -> bool:
        """The mapping's FilterCriteria: any one pattern matching lets the record through."""
        return not self.filters or any(matches_pattern(pattern, record) for pattern in self.filters)

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        parts = [batch]
        while parts and not self._stopped:
            part = parts.pop(0)
            retries = 0
            while part and not self._stopped:
                if self._too_old(part):
                    self._park(part, "RecordAgeExceeded", retries + 1)
                    break
                failed_from = self._invoke(part)
                if failed_from is None:
                    break
                if failed_from < 0 and self.bisect and len(part) > 1:
                    # A function error with bisection on: each half is retried on its own.
                    half = len(part) // 2
                    parts[:0] = [part[:half], part[half:]]
                    break
                part = part[max(failed_from, 0) :]
                retries += 1
                if 0 <= self.max_retries < retries:
                    self._park(part, "RetryAttemptsExhausted", retries)
                    break
                time.sleep(min(_RETRY_PAUSE_SECONDS * 2 ** (retries - 1), _RETRY_PAUSE_MAX_SECONDS))

    def _invoke(self, part: list[dict[str, Any]]) -> int | None:
        """None: done; -1: the function failed; n: records from index n on are to be retried."""
        from moto.awslambda.utils import get_backend

        function = get_backend(self.account_id, self.region).get_function(self.esm.function_arn)
        response_headers: dict[str, Any] = {}
        try:
            payload = function.invoke(json.dumps({"Records": part}), {}, response_headers)
        except Exception:  # counted as a failed invocation
            logger.exception("invoking %s failed", self.esm.function_arn)
            return -1
        if response_headers.get("x-amz-function-error"):
            return -1
        if not self.partial:
            return None
        try:
            answer = json.loads(payload or b"null")
        except ValueError:
            return None
        failures = answer.get("batchItemFailures") if isinstance(answer, dict) else None
        if not failures:
            return None
        numbers = [record["dynamodb"]["SequenceNumber"] for record in part]
        indexes = [
            numbers.index(str(failure.get("itemIdentifier")))
            for failure in failures
            if str(failure.get("itemIdentifier")) in numbers
        ]
        # An identifier that names no record of the batch fails the whole batch, as on Lambda.
        return min(indexes) if len(indexes) == len(failures) else 0

    def _too_old(self, part: list[dict[str, Any]]) -> bool:
        if self.max_age < 0:
            return False
        oldest = min(int(record["dynamodb"].get("ApproximateCreationDateTime") or time.time()) for record in part)
        return time.time() - oldest > self.max_age

    def _park(self, part: list[dict[str, Any]], condition: str, invokes: int) -> None:
        """The batch's description (not its records) to the OnFailure queue, as Lambda sends it."""
        logger.warning(
            "stream records %s..%s for %s parked (%s)",
            part[0]["dynamodb"]["SequenceNumber"],
            part[-1]["dynamodb"]["SequenceNumber"],
            self.esm.function_arn,
            condition,
        )
        if not self.on_failure:
            return
        from moto.sqs.models import sqs_backends

        def arrival(record: dict[str, Any]) -> str:
            created = record["dynamodb"].get("ApproximateCreationDateTime") or time.time()
            return datetime.fromtimestamp(float(created), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

        body = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.esm.function_arn,
                "condition": condition,
                "approximateInvokeCount": invokes,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": part[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": part[-1]["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": arrival(part[0]),
                "approximateArrivalOfLastRecord": arrival(part[-1]),
                "batchSize": len(part),
                "streamArn": self.esm.event_source_arn,
            },
        }
        _, account, queue_name = self.on_failure.rsplit(":", 2)
        region = self.on_failure.split(":")[3]
        sqs_backends[account][region].send_message(queue_name, json.dumps(body))


# ---------------------------------------------------------------------- EventBridge patterns (the subset filters use)
def matches_pattern(pattern: dict[str, Any], event: Any) -> bool:
    """Every key of the pattern matches: a nested object recursively, a list by any one of its values."""
    if not isinstance(event, dict):
        return False
    for key, rule in pattern.items():
        value = event.get(key, _MISSING)
        if isinstance(rule, dict):
            if not matches_pattern(rule, value):
                return False
        elif isinstance(rule, list):
            if not any(_matches_value(option, value) for option in rule):
                return False
        else:
            raise ValueError(f"unsupported filter rule for {key!r}: {rule!r} (a pattern's leaves are lists)")
    return True


def _matches_value(option: Any, value: Any) -> bool:
    # A rule only ever matches a field that is there.
    if value is _MISSING or isinstance(value, dict | list):
        return False
    if isinstance(option, dict):
        if set(option) == {"anything-but"}:
            excluded = option["anything-but"]
            return value not in (excluded if isinstance(excluded, list) else [excluded])
        raise ValueError(f"unsupported filter operator: {option!r} (local mode knows exact values and anything-but)")
    return value == option


_shared = SharedPatch(_patch)
