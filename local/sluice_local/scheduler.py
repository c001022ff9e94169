"""Fire the template's schedules on time, in a background thread, through the local Lambda runner.

One thread keeps every schedule's next time and sleeps until the nearest one. Each firing runs the
target function in a thread of its own, as EventBridge and Scheduler invoke Lambda asynchronously:
a slow handler delays neither the other schedules nor its own next firing. Firings missed while the
machine slept are not caught up (AWS does not replay them either): the next time is computed from now.

The clock and the wait are injectable so tests step through minutes of schedule without sleeping.
Differences from AWS: a failed invocation is logged, not retried, and there is no dead-letter queue.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sluice_local.schedules import SCHEDULE, Schedule

__all__ = ["LocalScheduler", "scheduled_event"]

logger = logging.getLogger(__name__)

# How long stop() waits for invocations still running (the embedded AWS stops right after).
_STOP_GRACE_SECONDS = 5.0


class Runner(Protocol):
    def invoke_result(self, name: str, event: Any) -> Any: ...


def scheduled_event(schedule: Schedule, moment: datetime) -> dict[str, Any]:
    """EventBridge's scheduled event, what a target with no Input receives."""
    _, _, service, region, account, *_ = schedule.arn.split(":")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler" if service == "scheduler" else "aws.events",
        "account": account,
        "time": _timestamp(moment),
        "region": region,
        "resources": [schedule.arn],
        "detail": {},
    }


def target_event(schedule: Schedule, moment: datetime) -> Any:
    """What the target function receives at `moment`: its Input, or the scheduled event."""
    if schedule.input is None:
        return scheduled_event(schedule, moment)
    text = schedule.input
    if schedule.type == SCHEDULE:
        # Scheduler's context attributes, replaced in the Input text on every run.
        for name, value in (
            ("schedule-arn", schedule.arn),
            ("scheduled-time", _timestamp(moment)),
            ("execution-id", str(uuid.uuid4())),
            ("attempt-number", "1"),
        ):
            text = text.replace(f"<aws.scheduler.{name}>", value)
    return json.loads(text)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalScheduler:
    def __init__(
        self,
        schedules: list[Schedule],
        runner: Runner,
        *,
        clock: Callable[[], datetime] | None = None,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.schedules = list(schedules)
        self._runner = runner
        self._clock = clock or (lambda: datetime.now(UTC))
        self._stopping = threading.Event()
        # wait(seconds) -> True once stopping: the real one wakes at once on stop().
        self._wait = wait or self._stopping.wait
        self._thread: threading.Thread | None = None
        self._invocations: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._thread is not None or not self.schedules:
            return
        self._thread = threading.Thread(target=self._run, args=(self._clock(),), name="sluice-schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=_STOP_GRACE_SECONDS)
        with self._lock:
            running = list(self._invocations)
        for invocation in running:
            invocation.join(timeout=_STOP_GRACE_SECONDS)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the schedule thread to end (a test's wait returning True ends it), then for its invocations."""
        if self._thread is not None:
            self._thread.join(timeout)
        with self._lock:
            running = list(self._invocations)
        for invocation in running:
            invocation.join(timeout)

    # ------------------------------------------------------------------ the loop
    def _run(self, started: datetime) -> None:
        upcoming = {index: self._next(schedule, started, started) for index, schedule in enumerate(self.schedules)}
        while not self._stopping.is_set():
            now = self._clock()
            for index, moment in list(upcoming.items()):
                if moment is None:
                    continue
                if moment <= now:
                    self._fire(self.schedules[index], moment)
                    upcoming[index] = self._next(self.schedules[index], max(now, moment), started)
            pending = [moment for moment in upcoming.values() if moment is not None]
            if not pending:
                return  # one-time schedules done, or every end date passed
            delay = max((min(pending) - self._clock()).total_seconds(), 0.0)
            if self._wait(delay):
                return

    @staticmethod
    def _next(schedule: Schedule, after: datetime, started: datetime) -> datetime | None:
        # A StartDate in the future moves the rate grid's origin there (and includes the start itself).
        origin = started
        if schedule.start is not None and schedule.start > started:
            origin = schedule.start
            after = max(after, schedule.start - timedelta(microseconds=1))
        moment = schedule.expression.next_after(after, origin)
        if moment is None or (schedule.end is not None and moment > schedule.end):
            return None
        return moment

    def _fire(self, schedule: Schedule, moment: datetime) -> None:
        invocation = threading.Thread(
            target=self._invoke, args=(schedule, moment), name=f"schedule-{schedule.logical_id}", daemon=True
        )
        with self._lock:
            self._invocations = [thread for thread in self._invocations if thread.is_alive()]
            self._invocations.append(invocation)
        invocation.start()

    def _invoke(self, schedule: Schedule, moment: datetime) -> None:
        try:
            event = target_event(schedule, moment)
            result = self._runner.invoke_result(schedule.function_arn, event)
        except Exception:  # one bad firing must not end the schedules
            logger.exception("schedule %s: invoking %s failed", schedule.logical_id, schedule.function)
            return
        error = getattr(result, "function_error", None)
        if error:
            payload = getattr(result, "payload", {}) or {}
            logger.warning(
                "schedule %s: %s failed: %s: %s",
                schedule.logical_id,
                schedule.function,
                payload.get("errorType"),
                payload.get("errorMessage"),
            )
        else:
            logger.info("schedule %s fired %s at %s", schedule.logical_id, schedule.function, _timestamp(moment))
