"""Workflow steps "Check checkpoint and start attempt" and "Record attempt outcome" of statemachines/training.

Input: {"action": "start" | "finish", "job": <TrainingExecutionInput>, "plan": <AttemptPlan>}.
- start (sluice.jobs.kinds.training.attempts): checks the checkpoint location before a resumed attempt,
  records the attempt on the RUNNING job, creates its training job, stops it if the job was cancelled
  meanwhile. Output: AttemptStarted {training_job_name, started, arn, stopped}.
- finish (sluice.jobs.kinds.training.outcome): describes the training job, records what it proved in
  details.attempts[], and decides. Output: AttemptOutcome {outcome, training_job_name, error, reason,
  plan, register, details}.
"""

from __future__ import annotations

from typing import Any, Literal

from sluice import clients
from sluice.jobs import services
from sluice.jobs.kinds.training.attempts import AttemptStart, start_attempt
from sluice.jobs.kinds.training.outcome import AttemptFinish, finish_attempt
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer


class StartRequest(AttemptStart):
    action: Literal["start"]


class FinishRequest(AttemptFinish):
    action: Literal["finish"]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    if event.get("action") == "start":
        start = StartRequest.model_validate(event)
        logger.append_keys(job_id=start.job.job_id)
        started = start_attempt(services.store(), clients.get("sagemaker"), clients.get("s3"), start, get_settings())
        logger.info("training attempt start", extra={"attempt": start.plan.number, **started.model_dump()})
        return started.model_dump(mode="json")
    finish = FinishRequest.model_validate(event)
    logger.append_keys(job_id=finish.job.job_id)
    outcome = finish_attempt(services.store(), clients.get("sagemaker"), finish, get_settings())
    logger.info(
        "training attempt outcome",
        extra={"attempt": finish.plan.number, **outcome.model_dump(mode="json", exclude={"details"})},
    )
    return outcome.model_dump(mode="json")
