"""The reaper: jobs that are not final long after their last change are reconciled, or failed.

A job can be left behind by a crash anywhere outside its workflow: a submission that died after
creating the job but before starting it (QUEUED, no execution), an execution that ended without
recording the outcome (its last step failed beyond its retries, someone stopped it in the console),
or a SageMaker notification that never arrived. The jobs table's ByStatus index (partition `status`,
sort `updated_at`) gives, per non-final status, the jobs unchanged since a cutoff, oldest first: the
table is never scanned. Each kind says how long its jobs may stay in a status (KindHooks.stale_after)
and what its own side says about a job whose workflow is gone (KindHooks.reconcile).

Every change is JobStore.transition (forward-only, conditional): a workflow or notification that
finishes the job meanwhile wins and the reaper changes nothing. The transition into a final state is
announced by the announcer (it follows the table's changes), like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from sluice import clients
from sluice.jobs.kind_hooks import Reconciliation
from sluice.jobs.kinds import JobKind, hooks
from sluice.jobs.models import ALLOWED_TRANSITIONS, Job, JobStatus
from sluice.jobs.status import MAX_REASON_CHARS, failure_reason
from sluice.jobs.store import JobStore
from sluice.jobs.workflow_start import is_execution_arn
from sluice.telemetry import logger

BY_STATUS_INDEX = "ByStatus"
# Who the audit lines and the job's details.reaped name.
REAPER = "reaper"
# Step Functions' statuses of an execution that may still record the job's outcome.
_LIVE_EXECUTION = {"RUNNING", "PENDING_REDRIVE"}

Outcome = Literal["reconciled", "failed", "left", "unchanged", "error"]


class ExecutionState(BaseModel):
    """What DescribeExecution says; status "MISSING" for an execution that does not exist."""

    status: str
    error: str | None = None
    cause: str | None = None


class ReapedJob(BaseModel):
    job_id: str
    kind: str
    from_status: JobStatus
    outcome: Outcome
    to_status: JobStatus | None = None
    found: str


class ReaperReport(BaseModel):
    examined: int = 0
    # More stale jobs than reaper_max_jobs_per_run: the next run goes on with the oldest left.
    truncated: bool = False
    jobs: list[ReapedJob] = []

    def count(self, outcome: Outcome) -> int:
        return sum(1 for job in self.jobs if job.outcome == outcome)


class ReaperIncomplete(Exception):
    """Some jobs could not be looked at this run (throttling, say): the run fails so the Errors alarm sees
    it; the jobs stay stale and the next run tries them again."""


def reap_stuck_jobs(
    store: JobStore, *, max_jobs: int, now: datetime | None = None, page_size: int | None = None
) -> ReaperReport:
    """Look at up to `max_jobs` stale jobs, oldest first per status and kind, and reconcile each.
    The index is read `page_size` rows at a time (default: the budget, at most 100)."""
    now = now or datetime.now(UTC)
    report = ReaperReport()
    for status, kind, job_id in _stale_jobs(store, now, page_size or max(1, min(max_jobs, 100))):
        if report.examined >= max_jobs:
            report.truncated = True
            break
        report.examined += 1
        try:
            reaped = reap_job(store, job_id, status, now)
        except (ClientError, BotoCoreError) as exc:
            logger.error("reaper could not look at a job", extra={"job_id": job_id, "error": str(exc)})
            reaped = ReapedJob(job_id=job_id, kind=kind, from_status=status, outcome="error", found=str(exc))
        if reaped is not None:
            report.jobs.append(reaped)
    logger.info(
        "reaper run",
        extra={
            "examined": report.examined,
            "truncated": report.truncated,
            **{outcome: report.count(outcome) for outcome in ("reconciled", "failed", "left", "unchanged", "error")},
        },
    )
    return report


def _stale_jobs(store: JobStore, now: datetime, page_size: int) -> Iterator[tuple[JobStatus, str, str]]:
    """(status, kind, job id) of every job unchanged past its kind's limit for its status, oldest first
    per (status, kind), a page at a time (the caller stops reading when its budget is spent)."""
    for status in (status for status in JobStatus if not status.terminal):
        for kind in JobKind:
            limit = hooks(kind).stale_after(status)
            if limit is None:
                continue
            cutoff = (now - timedelta(seconds=limit)).isoformat(timespec="milliseconds")
            params: dict[str, Any] = {
                "TableName": store.table,
                "IndexName": BY_STATUS_INDEX,
                "KeyConditionExpression": "#status = :status AND #updated_at < :cutoff",
                "FilterExpression": "#kind = :kind",
                "ExpressionAttributeNames": {"#status": "status", "#updated_at": "updated_at", "#kind": "kind"},
                "ExpressionAttributeValues": {
                    ":status": {"S": status.value},
                    ":cutoff": {"S": cutoff},
                    ":kind": {"S": kind.value},
                },
                "ScanIndexForward": True,
                "Limit": page_size,
            }
            while True:
                page = store.dynamodb.query(**params)
                for item in page.get("Items", []):
                    yield status, kind.value, item["job_id"]["S"]
                if not page.get("LastEvaluatedKey"):
                    break
                params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def reap_job(store: JobStore, job_id: str, seen_status: JobStatus, now: datetime) -> ReapedJob | None:
    """One stale job: left alone while its workflow (or SageMaker) is still at work, else moved to the
    outcome its kind reconciles, else failed with what was found. None when the job changed since the
    index was read (the index is eventually consistent; the record is read consistently)."""
    job = store.get(job_id)
    if job is None or job.status != seen_status or job.status.terminal:
        return None
    limit = hooks(job.kind).stale_after(job.status)
    if limit is None or datetime.fromisoformat(job.updated_at) > now - timedelta(seconds=limit):
        return None
    idle = _minutes(now - datetime.fromisoformat(job.updated_at))
    if not job.execution_id and job.status == JobStatus.QUEUED:
        found = f"QUEUED for {idle} minutes without an execution"
        reason = (
            f"The job was never started: it stayed QUEUED for {idle} minutes without a workflow execution "
            "(its submission did not finish). Submit it again."
        )
        failed = Reconciliation(status=JobStatus.FAILED, failure_reason=reason, found=found)
        return _finish(store, job, failed, declared=True)
    execution = describe_execution(job.execution_id) if is_execution_arn(job.execution_id) else None
    if execution is not None and execution.status in _LIVE_EXECUTION:
        return _left(job, f"its workflow execution is {execution.status}")
    reconciled = hooks(job.kind).reconcile(job)
    gone = _execution_words(execution)
    if reconciled is None:
        reason = f"The job stopped making progress: it stayed {job.status.value} for {idle} minutes and {gone}"
        if execution is not None and (execution.error or execution.cause):
            # A Lambda error's cause is its JSON error shape: the message, without the stack trace.
            error, message = failure_reason({"Error": execution.error or "", "Cause": execution.cause})
            reason += f" ({error}: {message})"
        found = f"{job.status.value} for {idle} minutes; {gone}"
        failed = Reconciliation(status=JobStatus.FAILED, failure_reason=reason + ".", found=found)
        return _finish(store, job, failed, declared=True)
    found = f"{gone}; {reconciled.found}" if execution is not None else reconciled.found
    reconciled = reconciled.model_copy(update={"found": found})
    if reconciled.status is None:
        return _left(job, found)
    return _finish(store, job, reconciled)


def describe_execution(arn: str) -> ExecutionState:
    try:
        answer = clients.get("stepfunctions").describe_execution(executionArn=arn)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return ExecutionState(status="MISSING")
        raise
    return ExecutionState(status=answer["status"], error=answer.get("error"), cause=answer.get("cause"))


def _execution_words(execution: ExecutionState | None) -> str:
    if execution is None:
        return "it has no workflow execution"
    if execution.status == "MISSING":
        return "its workflow execution does not exist"
    return f"its workflow execution ended {execution.status}"


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _left(job: Job, found: str) -> ReapedJob:
    logger.info("stale job left running", extra={"who": REAPER, "job_id": job.job_id, "why": found})
    return ReapedJob(job_id=job.job_id, kind=job.kind.value, from_status=job.status, outcome="left", found=found)


def _finish(store: JobStore, job: Job, reconciled: Reconciliation, *, declared: bool = False) -> ReapedJob:
    """`declared`: the reaper fails the job for want of any outcome (outcome "failed"); otherwise the
    kind's side gave the outcome (outcome "reconciled")."""
    target = reconciled.status
    assert target is not None
    fields: dict[str, Any] = {}
    if reconciled.output_location:
        fields["output_location"] = reconciled.output_location
    if target == JobStatus.FAILED:
        fields["failure_reason"] = (reconciled.failure_reason or "The job failed.")[:MAX_REASON_CHARS]
    note = {"by": REAPER, "at": datetime.now(UTC).isoformat(timespec="seconds"), "from_status": job.status.value}
    note |= {"found": reconciled.found} | ({"actions": reconciled.actions} if reconciled.actions else {})
    moved = _move(store, job, target, add_details={"reaped": note}, **fields)
    outcome: Outcome
    if moved is None:
        # Finished (or moved on) by its workflow, a notification or a cancel since it was read: theirs wins.
        outcome = "unchanged"
        logger.info("stale job finished meanwhile", extra={"who": REAPER, "job_id": job.job_id})
    else:
        outcome = "failed" if declared else "reconciled"
        # The audit line of a control action: who moved which job where, and why.
        logger.info(
            "job reaped",
            extra={
                "who": REAPER,
                "what": f"{job.status.value} -> {target.value}",
                "why": reconciled.found,
                "job_id": job.job_id,
                "kind": job.kind.value,
                "caller": job.caller,
                "actions": reconciled.actions,
            },
        )
    return ReapedJob(
        job_id=job.job_id,
        kind=job.kind.value,
        from_status=job.status,
        outcome=outcome,
        to_status=target if moved is not None else None,
        found=reconciled.found,
    )


def _move(store: JobStore, job: Job, target: JobStatus, **changes: Any) -> Job | None:
    """One conditional transition; where the target cannot follow the job's status directly
    (AWAITING_APPROVAL -> SUCCEEDED), through RUNNING, which both allow."""
    if target in ALLOWED_TRANSITIONS[job.status]:
        return store.transition(job.job_id, target, **changes)
    if JobStatus.RUNNING in ALLOWED_TRANSITIONS[job.status] and target in ALLOWED_TRANSITIONS[JobStatus.RUNNING]:
        if store.transition(job.job_id, JobStatus.RUNNING) is None:
            return None
        return store.transition(job.job_id, target, **changes)
    return None


def run_reaper(
    store: JobStore, *, max_jobs: int, now: datetime | None = None, page_size: int | None = None
) -> ReaperReport:
    """One scheduled run (functions/job_reaper)."""
    report = reap_stuck_jobs(store, max_jobs=max_jobs, now=now, page_size=page_size)
    # Jobs the reaper makes final are announced by the stream like any other; final jobs whose announcement
    # is still pending are the announcer function's own scheduled backlog run (announcer.announce_backlog).
    if report.count("error"):
        raise ReaperIncomplete(f"{report.count('error')} of {report.examined} stale jobs could not be looked at")
    return report
