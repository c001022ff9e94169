"""What a kind of job supplies to the shared lifecycle (sluice.jobs.kinds registers one per kind)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from sluice.jobs.models import Job, JobStatus
from sluice.settings import approval_timeout_seconds, get_settings


def _nothing_to_stop(_job: Job) -> dict[str, str]:
    return {}


def _no_outputs(_job: Job) -> dict[str, Any]:
    return {}


class Reconciliation(BaseModel):
    """What a kind found on its own side (SageMaker, S3) about a job whose workflow is gone."""

    # The final status to record; None: the work is still going on there, so the job is left as it is.
    status: JobStatus | None = None
    output_location: str | None = None
    failure_reason: str | None = None
    # What the kind looked at, in words (the reaper's audit line and the job's details.reaped).
    found: str
    # What the kind did on its side ({"transform_job": "stopped"}), for the same audit line.
    actions: dict[str, str] = {}


def _nothing_to_reconcile(_job: Job) -> Reconciliation | None:
    return None


def shared_stale_after(status: JobStatus) -> float | None:
    """The limits every kind shares, in seconds without a change: a QUEUED job that never started, and
    an approval wait that outlived its own timeout (ApprovalTimeoutHours) by the margin."""
    settings = get_settings()
    if status == JobStatus.QUEUED:
        return settings.reaper_queued_limit_minutes * 60
    if status == JobStatus.AWAITING_APPROVAL:
        return approval_timeout_seconds(settings) + settings.reaper_approval_margin_minutes * 60
    return None


@dataclass(frozen=True)
class KindHooks:
    # After the job moved to CANCELLED and its execution was stopped: stop what else the kind started
    # (a transform job, say). Returns {what: outcome} for the cancel's audit line.
    cancel: Callable[[Job], dict[str, str]] = field(default=_nothing_to_stop)
    # The download fields of a SUCCEEDED job's view (JobView: output_url, output_files, ...).
    outputs: Callable[[Job], dict[str, Any]] = field(default=_no_outputs)
    # The reaper (sluice.jobs.reaper) asks this about a stuck job whose workflow execution ended, does
    # not exist, or that runs without one: what the kind's own side says. None: the kind has nothing to
    # look at, and the reaper fails the job with what it found.
    reconcile: Callable[[Job], Reconciliation | None] = field(default=_nothing_to_reconcile)
    # Seconds a job of this kind may stay in a non-final status without a change before the reaper looks
    # at it; None: never in that status. A kind adds its RUNNING limit (and any status of its own).
    stale_after: Callable[[JobStatus], float | None] = field(default=shared_stale_after)
    # Whether a cancel stops the job's Step Functions execution. False: the workflow must undo its own work
    # (a deployment rolls the endpoint back, then waits for InService) and sees the job CANCELLED at its
    # next check; the cancel hook is called either way.
    stops_execution: bool = True
