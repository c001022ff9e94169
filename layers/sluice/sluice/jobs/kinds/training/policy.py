"""A training run's first plan: which instance it starts on, whether an operator must approve it first,
and which instance types it may fall back to when capacity runs out.

Pure functions of the execution input and the settings, so "Plan first attempt" is a logged,
unit-testable decision; the approval itself is an operator's (sluice.approvals), as for batch jobs.
"""

from __future__ import annotations

from pydantic import BaseModel

from sluice.jobs.kinds.batch_transform.policy import instance_approval, needs_approval, transform_name_prefix
from sluice.jobs.kinds.training.models import AttemptPlan, TrainingExecutionInput
from sluice.settings import Settings, approval_timeout_seconds


class FirstAttempt(BaseModel):
    """The state machine's $.approval: the approval decision, its wait, and attempt 1's plan."""

    needs_approval: bool
    reason: str
    instance_type: str
    instance_count: int
    # How long "Wait for an operator's approval" waits (ApprovalTimeoutHours, in seconds).
    timeout_seconds: int
    # Recorded on the job when it starts running.
    record: dict[str, str | int | bool]
    plan: AttemptPlan


def training_name_prefix(job_id: str) -> str:
    """The job id as a SageMaker name (the batch kind's rule): attempt n's training job is <prefix>-<n>."""
    return transform_name_prefix(job_id)


def first_attempt_plan(job: TrainingExecutionInput) -> AttemptPlan:
    return AttemptPlan(
        number=1, name_prefix=training_name_prefix(job.job_id), instance_type=job.instance_type, spot=job.spot
    )


def plan_first_attempt(job: TrainingExecutionInput, settings: Settings) -> FirstAttempt:
    """Instance types in settings.batch_unapproved_instance_types run as asked; any other waits for an
    operator. Decided from the stack's settings alone: the requester is never the approver."""
    decision = instance_approval(job.instance_type, job.instance_count, settings.batch_unapproved_instance_types)
    return FirstAttempt(
        **decision.model_dump(),
        timeout_seconds=approval_timeout_seconds(settings),
        record={"instance_type": job.instance_type, "instance_count": job.instance_count, "spot": job.spot},
        plan=first_attempt_plan(job),
    )


def next_instance_type(job: TrainingExecutionInput, current: str, settings: Settings) -> str | None:
    """The trainer's next instance type after `current` (instance_type first, then the fallbacks in order).

    Only types that need no approval are fallbacks: an operator approved the type asked for, never a
    larger one the run might move to."""
    order = [job.instance_type, *[t for t in job.fallback_instance_types if t != job.instance_type]]
    later = order[order.index(current) + 1 :] if current in order else order
    for candidate in later:
        if not needs_approval(candidate, settings.batch_unapproved_instance_types):
            return candidate
    return None
