"""details.steps[]: one StepRecord per traffic step (its weight, when it started and ended, the last guard
reading's observations per variant, the verdict and the consecutive breaches). Only the workflow writes
them, one step at a time, so a read-modify-write of the list is enough.
"""

from __future__ import annotations

from typing import Any

from sluice.jobs.kinds.deployment.models import StepRecord
from sluice.jobs.models import utc_now
from sluice.jobs.store import JobStore


def recorded_steps(details: dict[str, Any]) -> list[StepRecord]:
    return [StepRecord.model_validate(item) for item in details.get("steps") or []]


def save_steps(store: JobStore, job_id: str, steps: list[StepRecord]) -> None:
    store.merge_details(job_id, steps=[step.model_dump(mode="json", exclude_none=True) for step in steps])


def with_step(steps: list[StepRecord], index: int, record: StepRecord) -> list[StepRecord]:
    """The list with `record` at `index` (a retried step replaces its entry, never appends a second)."""
    kept = list(steps[:index])
    return [*kept, record]


def start_step(store: JobStore, job_id: str, details: dict[str, Any], index: int, weight: float) -> None:
    steps = recorded_steps(details)
    earlier = steps[index] if index < len(steps) else None
    record = StepRecord(weight=weight, started=earlier.started if earlier else utc_now())
    save_steps(store, job_id, with_step(steps, index, record))


def update_step(store: JobStore, job_id: str, details: dict[str, Any], index: int, *, end: bool, **facts: Any) -> None:
    steps = recorded_steps(details)
    if index >= len(steps):
        return
    record = steps[index].model_copy(update={**facts, **({"ended": utc_now()} if end else {})})
    save_steps(store, job_id, [*steps[:index], record, *steps[index + 1 :]])
