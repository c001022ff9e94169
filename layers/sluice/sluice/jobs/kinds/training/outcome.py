"""The training workflow's "Record attempt outcome": what one attempt's training job proves, and what
the run does next.

`judge_attempt` is pure (the described training job, the plan, the settings): it fills the attempt's
record (details.attempts[]) and decides

- succeeded: Completed; its final metrics and model artifact go to the job (and to the registry);
- retry: a spot interruption or MaxWaitTimeExceeded (a new attempt resumes from the checkpoint), or
  insufficient capacity (the trainer's next instance type, or on-demand once the run had
  settings.training_spot_failures_before_on_demand spot failures); within max_attempts and
  settings.training_billable_seconds_budget;
- failed: algorithm or client errors, MaxRuntimeExceeded and anything unknown, at once with
  SageMaker's reason; a restart from zero (unless settings.training_from_zero_restart is "warn");
  attempts or budget used up;
- cancelled: the training job was stopped because the job was cancelled.

Progress is proven from the metrics the trainer logs: resumed_from_step (the resume metric; absent: 0)
and last_checkpoint_step (the checkpoint metric). The watermark is the highest step checkpointed by
the run so far; an attempt that reported progress but started below it trained from zero.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.jobs.kinds.training.attempts import (
    THROTTLES,
    TrainingApiThrottled,
    recorded_attempts,
    training_job_name,
    with_attempt,
)
from sluice.jobs.kinds.training.models import AttemptPlan, AttemptRecord, TrainingExecutionInput
from sluice.jobs.kinds.training.policy import next_instance_type
from sluice.jobs.models import JobStatus
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.jobs.store import JobStore
from sluice.settings import Settings

Outcome = Literal["succeeded", "retry", "failed", "cancelled"]
FailureKind = Literal["interrupted", "max_wait_exceeded", "capacity", "fatal"]


class AttemptFinish(BaseModel):
    job: TrainingExecutionInput
    plan: AttemptPlan


class AttemptOutcome(BaseModel):
    """The state machine's $.outcome; "Outcome?" acts on `outcome`."""

    outcome: Outcome
    training_job_name: str
    # Failed: the failure type the job shows (details.failure_type); the reason is said in words.
    error: str | None = None
    reason: str
    # Retry: the next attempt's plan. Otherwise the current one, with the watermark and billing updated.
    plan: AttemptPlan
    # Succeeded with a `register` spec: "Register model version" runs.
    register_model: bool = False
    # What "Mark job succeeded" records in the job's details: model_artifact and metrics.
    details: dict[str, Any] = {}


class Judgement(BaseModel):
    record: AttemptRecord
    outcome: AttemptOutcome
    # A from-zero restart the settings only warn about (details.warnings).
    warning: str | None = None


def final_metrics(described: dict[str, Any]) -> dict[str, float]:
    """FinalMetricDataList by name: the last value of each metric definition in the training log."""
    return {item["MetricName"]: float(item["Value"]) for item in described.get("FinalMetricDataList") or []}


def failure_kind(secondary: str | None, reason: str) -> FailureKind:
    # SageMaker reports a reclaimed spot instance as Failed/Interrupted with "Spot interruption: ...".
    if secondary == "Interrupted" or reason.startswith("Spot interruption"):
        return "interrupted"
    if secondary == "MaxWaitTimeExceeded":
        return "max_wait_exceeded"
    if reason.startswith(("CapacityError", "InsufficientCapacity")):
        return "capacity"
    return "fatal"


def judge_attempt(
    job: TrainingExecutionInput,
    plan: AttemptPlan,
    described: dict[str, Any],
    *,
    cancelled: bool,
    settings: Settings,
    ended_at: str | None = None,
) -> Judgement:
    name = training_job_name(plan)
    status = described.get("TrainingJobStatus")
    secondary = described.get("SecondaryStatus")
    reason = (described.get("FailureReason") or "").strip()
    metrics = final_metrics(described)
    resumed = int(metrics.get(job.resume_metric, 0))
    checkpointed = int(metrics[job.checkpoint_metric]) if job.checkpoint_metric in metrics else None
    # Judged only for an attempt that trained (reported a metric): one refused capacity never started.
    restarted = bool(metrics) and plan.watermark > 0 and resumed < plan.watermark
    progress = plan.model_copy(
        update={
            "watermark": max(plan.watermark, checkpointed or 0),
            "billable_seconds": plan.billable_seconds + int(described.get("BillableTimeInSeconds") or 0),
        }
    )
    record = AttemptRecord(
        number=plan.number,
        training_job_name=name,
        instance_type=plan.instance_type,
        spot=plan.spot,
        status=status,
        secondary_status=secondary,
        failure_reason=reason or None,
        billable_seconds=int(described.get("BillableTimeInSeconds") or 0),
        resumed_from_step=resumed,
        last_checkpoint_step=checkpointed,
        restarted_from_zero=restarted,
        ended_at=ended_at,
    )

    def judged(outcome: AttemptOutcome, label: str, warning: str | None = None) -> Judgement:
        return Judgement(record=record.model_copy(update={"outcome": label}), outcome=outcome, warning=warning)

    def failed(error: str, why: str, label: str = "failed", warning: str | None = None) -> Judgement:
        outcome = AttemptOutcome(
            outcome="failed", training_job_name=name, error=error, reason=why[:MAX_REASON_CHARS], plan=progress
        )
        return judged(outcome, label, warning)

    # Stopped by a StopTrainingJob (a cancel, or someone in SageMaker), not by one of SageMaker's limits.
    if status == "Stopped" and secondary not in ("MaxWaitTimeExceeded", "MaxRuntimeExceeded"):
        if cancelled:
            return judged(
                AttemptOutcome(
                    outcome="cancelled", training_job_name=name, reason="The job was cancelled.", plan=progress
                ),
                "stopped",
            )
        return failed(
            "TrainingJobStopped",
            f"Training job {name} was stopped, but not by a cancel of this job: someone stopped it in SageMaker.",
            "stopped",
        )

    warning = None
    if restarted:
        words = (
            f"attempt {plan.number} ({name}) restarted from zero: it started at step {resumed} although step "
            f"{plan.watermark} was checkpointed under {job.checkpoint_uri}"
        )
        if settings.training_from_zero_restart != "warn":
            return failed(
                "RestartedFromZero",
                f"{words[0].upper()}{words[1:]}. The trainer did not resume from its checkpoint: it must load the "
                "latest checkpoint from its checkpoint directory at start and log the step it resumed from.",
                "restarted_from_zero",
            )
        warning = f"{words}; it trained those steps again."

    if status == "Completed":
        artifact = (described.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        outcome = AttemptOutcome(
            outcome="succeeded",
            training_job_name=name,
            reason=f"Training job {name} completed.",
            plan=progress,
            register_model=job.registration is not None,
            details={"model_artifact": artifact, "metrics": metrics, "training_job_name": name},
        )
        return judged(outcome, "succeeded", warning)

    kind = failure_kind(secondary, reason)
    said = reason or (
        f"MaxRuntimeExceeded: training job {name} ran longer than max_runtime_seconds ({job.max_runtime_seconds} s) "
        "and SageMaker stopped it. Raise max_runtime_seconds, or train fewer steps per run."
        if secondary == "MaxRuntimeExceeded"
        else f"Training job {name} ended {status} ({secondary}) without a failure reason."
    )
    if kind == "fatal":
        return failed("TrainingJobFailed", said, warning=warning)

    spot_failures = progress.spot_failures + (1 if plan.spot else 0)
    on_demand_now = plan.spot and spot_failures >= settings.training_spot_failures_before_on_demand
    instance_type, spot = plan.instance_type, plan.spot and not on_demand_now
    if kind == "capacity" and not on_demand_now:
        fallback = next_instance_type(job, plan.instance_type, settings)
        if fallback is not None:
            instance_type = fallback
        elif plan.spot:
            spot = False  # no spot capacity on any allowed type: on-demand may have some
        else:
            tried = ", ".join([job.instance_type, *job.fallback_instance_types])
            return failed(
                "CapacityUnavailable",
                f"{said} No instance type left to fall back to (tried {tried}, on-demand included).",
                "capacity",
                warning,
            )
    if plan.number >= job.max_attempts:
        return failed(
            "AttemptsExhausted",
            f"{plan.number} attempts, all interrupted or short of capacity (max_attempts {job.max_attempts}); the "
            f"last: {said} The run checkpointed up to step {progress.watermark} under {job.checkpoint_uri}.",
            kind,
            warning,
        )
    if progress.billable_seconds >= settings.training_billable_seconds_budget:
        return failed(
            "BillableBudgetReached",
            f"The run's {plan.number} attempts billed {progress.billable_seconds} s, which reaches the budget of "
            f"{settings.training_billable_seconds_budget} s (TrainingBillableSecondsBudget); no further attempt "
            f"was started. The last: {said}",
            kind,
            warning,
        )
    following = progress.model_copy(
        update={
            "number": plan.number + 1,
            "instance_type": instance_type,
            "spot": spot,
            "spot_failures": spot_failures,
        }
    )
    how = "on-demand" if not spot else "spot"
    outcome = AttemptOutcome(
        outcome="retry",
        training_job_name=name,
        reason=(
            f"{said} Attempt {following.number} resumes from step {progress.watermark} on {instance_type} ({how})."
        ),
        plan=following,
    )
    return judged(outcome, kind, warning)


def finish_attempt(store: JobStore, sagemaker: Any, request: AttemptFinish, settings: Settings) -> AttemptOutcome:
    """Describe the attempt's training job, record what it proved on the job, and say what comes next."""
    name = training_job_name(request.plan)
    try:
        described = sagemaker.describe_training_job(TrainingJobName=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in THROTTLES:
            raise TrainingApiThrottled(f"{code}: {exc}") from None
        raise
    current = store.get(request.job.job_id)
    judgement = judge_attempt(
        request.job,
        request.plan,
        described,
        cancelled=current is not None and current.status == JobStatus.CANCELLED,
        settings=settings,
        ended_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    details = current.details if current else {}
    attempts = recorded_attempts(details)
    earlier = next((a for a in attempts if a.number == request.plan.number), None)
    record = judgement.record.model_copy(update={"started_at": earlier.started_at if earlier else None})
    facts: dict[str, Any] = {
        "attempts": [a.model_dump(mode="json", exclude_none=True) for a in with_attempt(attempts, record)],
        "watermark": judgement.outcome.plan.watermark,
        "billable_seconds": judgement.outcome.plan.billable_seconds,
    }
    if record.restarted_from_zero:
        facts["restarted_from_zero"] = True
    if judgement.warning:
        warnings = list(details.get("warnings") or [])
        facts["warnings"] = warnings if judgement.warning in warnings else [*warnings, judgement.warning]
    store.merge_details(request.job.job_id, **facts)
    return judgement.outcome
