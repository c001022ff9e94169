"""The deployment kind's part of the shared lifecycle.

A cancel must not stop the workflow (stops_execution=False): half-shifted traffic is rolled back by the
workflow, which waits for InService and checks the endpoint; the cancel hook records the request it
acts on. The reaper, finding a workflow gone, gives the endpoint's lock back and says what the endpoint
runs, but never changes the endpoint itself (that is a person's call once a workflow died mid-change).
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from sluice import clients
from sluice.jobs import services
from sluice.jobs.kind_hooks import KindHooks, Reconciliation, shared_stale_after
from sluice.jobs.kinds.deployment.lock import endpoint_locks
from sluice.jobs.kinds.deployment.rollback import REQUESTED, rollback_note
from sluice.jobs.models import Job, JobStatus
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.settings import get_settings
from sluice.telemetry import logger

CANCELLED_REASON = "cancelled"
# Bake extensions the workflow allows when traffic is too thin (DeploymentMaxBakeExtensions' default).
_BAKE_EXTENSIONS = 2
# Endpoint updates (minutes each on AWS, several per deployment), their polls and the guard readings.
_WORKFLOW_MARGIN_SECONDS = 3600


def cancel(job: Job) -> dict[str, str]:
    """The job is CANCELLED already: the workflow rolls back at its next check. A deployment that never
    started running (QUEUED, or waiting for an approval) changed nothing, so its execution is stopped."""
    by = job.details.get("cancelled_by") or "unknown"
    services.store().merge_details(job.job_id, **{REQUESTED: rollback_note(by, CANCELLED_REASON)})
    outcome = {"rollback": "requested"}
    if job.started_at is None:
        from sluice.jobs.queries import stop_execution

        outcome["execution"] = stop_execution(job, by)
    logger.info(
        "deployment cancelled",
        extra={
            "audit": "deployment",
            "who": by,
            "what": "rollback",
            "why": CANCELLED_REASON,
            "job_id": job.job_id,
            "endpoint_name": job.details.get("endpoint_name"),
        },
    )
    return outcome


def reconcile(job: Job) -> Reconciliation:
    """The workflow is gone: the lock is given back and the job fails, saying whether the endpoint still
    runs the EndpointConfig it ran before the deployment (details.baseline_endpoint_config)."""
    endpoint = job.details.get("endpoint_name", "")
    released = endpoint_locks().release(endpoint, job.job_id) if endpoint else False
    actions = {"lock": "released" if released else "not held"}
    baseline = job.details.get("baseline_endpoint_config")
    try:
        described = clients.get("sagemaker").describe_endpoint(EndpointName=endpoint)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("ValidationException", "ResourceNotFound"):
            raise
        return Reconciliation(
            status=JobStatus.FAILED,
            failure_reason=f"The deployment's workflow ended before it finished, and endpoint {endpoint} no "
            "longer exists.",
            found=f"endpoint {endpoint} not found",
            actions=actions,
        )
    running = described.get("EndpointConfigName", "")
    status = described.get("EndpointStatus", "")
    found = f"endpoint {endpoint} {status} on config {running}"
    if baseline is None or running == baseline:
        what = "its baseline config" if baseline else "the config it ran before (the workflow changed nothing)"
        return Reconciliation(
            status=JobStatus.FAILED,
            failure_reason=f"The deployment's workflow ended before it finished; endpoint {endpoint} runs "
            f"{what}, {running}. Nothing was promoted: deploy again.",
            found=found + (" (baseline)" if baseline else "; no baseline recorded"),
            actions=actions,
        )
    reason = (
        f"The deployment's workflow ended before it finished, leaving endpoint {endpoint} on config {running}, "
        f"not its baseline {baseline}. Check the endpoint's traffic; to roll back by hand: aws sagemaker "
        f"update-endpoint --endpoint-name {endpoint} --endpoint-config-name {baseline}"
    )
    return Reconciliation(
        status=JobStatus.FAILED,
        failure_reason=reason[:MAX_REASON_CHARS],
        found=f"{found}, not the baseline {baseline}",
        actions=actions,
    )


def stale_after(status: JobStatus) -> float | None:
    if status == JobStatus.RUNNING:
        return running_limit_seconds()
    return shared_stale_after(status)


def running_limit_seconds() -> float:
    """The longest a RUNNING deployment goes without writing to its job: one step's bake at the stack's
    default, extended as often as the workflow extends it, plus the endpoint updates around it. A longer
    bake asked by a request only costs the reaper a look at an execution it then finds running."""
    bake = get_settings().deployment_bake_seconds
    return float(bake * (1 + _BAKE_EXTENSIONS) + _WORKFLOW_MARGIN_SECONDS)


HOOKS = KindHooks(cancel=cancel, reconcile=reconcile, stale_after=stale_after, stops_execution=False)
