"""The reaper, every ReaperIntervalMinutes (EventBridge Scheduler): stale jobs reconciled or failed.

Input: the schedule's event (its content is not used). Output: sluice.jobs.reaper.ReaperReport. A run
that could not look at some jobs raises after looking at the others (the Errors alarm sees it; the
next run tries them again).
"""

from __future__ import annotations

from typing import Any

from sluice.jobs import services
from sluice.jobs.reaper import run_reaper
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer

store = services.store()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(_event: dict[str, Any], _context: Any) -> dict[str, Any]:
    report = run_reaper(store, max_jobs=get_settings().reaper_max_jobs_per_run)
    return report.model_dump(mode="json")
