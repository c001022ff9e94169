"""What a kind of job supplies to the shared lifecycle (sluice.jobs.kinds registers one per kind)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sluice.jobs.models import Job


def _nothing_to_stop(_job: Job) -> dict[str, str]:
    return {}


def _no_outputs(_job: Job) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class KindHooks:
    # After the job moved to CANCELLED and its execution was stopped: stop what else the kind started
    # (a transform job, say). Returns {what: outcome} for the cancel's audit line.
    cancel: Callable[[Job], dict[str, str]] = field(default=_nothing_to_stop)
    # The download fields of a SUCCEEDED job's view (JobView: output_url, output_files, ...).
    outputs: Callable[[Job], dict[str, Any]] = field(default=_no_outputs)
