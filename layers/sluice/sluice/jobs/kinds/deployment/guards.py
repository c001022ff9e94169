"""The guards ("Read guards"): what the new version and the baseline served in the last guard window, the
verdict of that reading, and what the bake does next.

Read per variant with one GetMetricData over the window (the guard interval, in whole minutes: CloudWatch's
standard resolution): SageMaker's `Invocations`, `Invocation5XXErrors` (Sum) and `ModelLatency` (p99, in
microseconds) with dimensions EndpointName + VariantName, and Sluice's `Predictions` and
`LowConfidencePredictions` (Sum) with service/model/provider/variant. The verdict of one reading:

- insufficient while the canary served fewer than min_invocations in the window;
- breached when its error rate (5XX / Invocations), its p99 ModelLatency in ms or its low-confidence share
  (LowConfidencePredictions / Predictions) is above its guard; `consecutive_breaches` in a row trip it;
- passed otherwise (the breach count starts again).

The bake reads every guard interval until bake_seconds; a last reading without enough traffic extends the
bake (up to DeploymentMaxBakeExtensions), then the deployment rolls back for too few invocations. The
baseline's numbers are kept beside the canary's (observed.baseline) for comparison.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from sluice.jobs.kinds.deployment.endpoint_updates import baseline_of
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput, ResolvedGuards, VariantObservation
from sluice.jobs.kinds.deployment.steps import update_step
from sluice.jobs.models import JobStatus
from sluice.jobs.store import JobStore
from sluice.settings import Settings

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
PROVIDER = "sagemaker"
Verdict = Literal["passed", "breached", "insufficient_traffic"]
Next = Literal["continue", "passed", "tripped", "too_few", "rollback_requested"]


class Bake(BaseModel):
    """The bake's state between readings ($.bake)."""

    step: int
    elapsed: int = 0
    breaches: int = 0
    extensions: int = 0
    readings: int = 0


class GuardRead(BaseModel):
    job: DeploymentExecutionInput
    bake: Bake
    interval_seconds: int
    max_extensions: int


class GuardReading(BaseModel):
    """The state machine's $.guards: "Guards tripped?" acts on `next`."""

    next: Next
    verdict: Verdict | None = None
    reason: str = ""
    bake: Bake
    observed: dict[str, VariantObservation] = {}


class Totals(BaseModel):
    invocations: float = 0
    errors: float = 0
    p99_us: float | None = None
    predictions: float = 0
    low_confidence: float = 0

    def observation(self) -> VariantObservation:
        return VariantObservation(
            invocations=int(self.invocations),
            error_rate_percent=round(self.errors * 100 / self.invocations, 3) if self.invocations else None,
            p99_latency_ms=round(self.p99_us / 1000, 3) if self.p99_us is not None else None,
            low_confidence_percent=(
                round(self.low_confidence * 100 / self.predictions, 3) if self.predictions else None
            ),
        )


def window_seconds(interval_seconds: int) -> int:
    return 60 * max(1, math.ceil(interval_seconds / 60))


def _query(qid: str, namespace: str, metric: str, dimensions: dict[str, str], stat: str, period: int) -> dict:
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": name, "Value": value} for name, value in dimensions.items()],
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def variant_queries(job: DeploymentExecutionInput, variant: str, index: int, period: int, namespace: str) -> list[dict]:
    sagemaker = {"EndpointName": job.endpoint_name, "VariantName": variant}
    sluice = {
        "service": os.environ.get("POWERTOOLS_SERVICE_NAME", "sluice"),
        "model": job.model,
        "provider": PROVIDER,
        "variant": variant,
    }
    return [
        _query(f"invocations_{index}", SAGEMAKER_NAMESPACE, "Invocations", sagemaker, "Sum", period),
        _query(f"errors_{index}", SAGEMAKER_NAMESPACE, "Invocation5XXErrors", sagemaker, "Sum", period),
        _query(f"latency_{index}", SAGEMAKER_NAMESPACE, "ModelLatency", sagemaker, "p99", period),
        _query(f"predictions_{index}", namespace, "Predictions", sluice, "Sum", period),
        _query(f"lowconfidence_{index}", namespace, "LowConfidencePredictions", sluice, "Sum", period),
    ]


def read_window(
    cloudwatch: Any, job: DeploymentExecutionInput, variants: list[str], interval_seconds: int, namespace: str
) -> list[Totals]:
    """Totals per variant (in `variants`' order) over the last guard window."""
    window = window_seconds(interval_seconds)
    end = datetime.now(UTC)
    queries = [q for i, variant in enumerate(variants) for q in variant_queries(job, variant, i, window, namespace)]
    values: dict[str, list[float]] = {}
    token = None
    while True:
        kwargs: dict[str, Any] = {
            "MetricDataQueries": queries,
            "StartTime": end - timedelta(seconds=window),
            "EndTime": end,
        }
        if token:
            kwargs["NextToken"] = token
        answer = cloudwatch.get_metric_data(**kwargs)
        for result in answer.get("MetricDataResults", []):
            values.setdefault(result["Id"], []).extend(float(v) for v in result.get("Values", []))
        token = answer.get("NextToken")
        if not token:
            break
    found = []
    for i in range(len(variants)):
        latency = values.get(f"latency_{i}") or []
        found.append(
            Totals(
                invocations=sum(values.get(f"invocations_{i}", [])),
                errors=sum(values.get(f"errors_{i}", [])),
                p99_us=max(latency) if latency else None,
                predictions=sum(values.get(f"predictions_{i}", [])),
                low_confidence=sum(values.get(f"lowconfidence_{i}", [])),
            )
        )
    return found


def combined(totals: list[Totals]) -> Totals:
    """The baseline variants as one (a p99 over several is bounded by the largest)."""
    latencies = [t.p99_us for t in totals if t.p99_us is not None]
    return Totals(
        invocations=sum(t.invocations for t in totals),
        errors=sum(t.errors for t in totals),
        p99_us=max(latencies) if latencies else None,
        predictions=sum(t.predictions for t in totals),
        low_confidence=sum(t.low_confidence for t in totals),
    )


def breaches_of(canary: VariantObservation, guards: ResolvedGuards) -> list[tuple[str, str]]:
    """(guard, "canary X > limit") for every guard the reading breaches."""
    found = []
    if canary.error_rate_percent is not None and canary.error_rate_percent > guards.error_rate_percent:
        found.append(
            ("error_rate_percent", f"canary {canary.error_rate_percent:.1f}% > {guards.error_rate_percent:g}%")
        )
    if canary.p99_latency_ms is not None and canary.p99_latency_ms > guards.p99_latency_ms:
        found.append(("p99_latency_ms", f"canary {canary.p99_latency_ms:g} ms > {guards.p99_latency_ms:g} ms"))
    if canary.low_confidence_percent is not None and canary.low_confidence_percent > guards.low_confidence_percent:
        found.append(
            (
                "low_confidence_percent",
                f"canary {canary.low_confidence_percent:.1f}% > {guards.low_confidence_percent:g}%",
            )
        )
    return found


def verdict_of(canary: VariantObservation, guards: ResolvedGuards) -> Verdict:
    if canary.invocations < guards.min_invocations:
        return "insufficient_traffic"
    return "breached" if breaches_of(canary, guards) else "passed"


def _baseline_words(guard: str, baseline: VariantObservation) -> str:
    value = {
        "error_rate_percent": baseline.error_rate_percent,
        "p99_latency_ms": baseline.p99_latency_ms,
        "low_confidence_percent": baseline.low_confidence_percent,
    }[guard]
    if value is None:
        return "baseline no data"
    return f"baseline {value:g} ms" if guard == "p99_latency_ms" else f"baseline {value:.1f}%"


def trip_reason(observed: dict[str, VariantObservation], guards: ResolvedGuards, breaches: int) -> str:
    """e.g. "error_rate_percent: canary 33.3% > 1% over 60 invocations (baseline 0.0%), 2 breaches in a row"."""
    canary, baseline = observed["canary"], observed["baseline"]
    parts = [
        f"{guard}: {words} over {canary.invocations} invocations ({_baseline_words(guard, baseline)})"
        for guard, words in breaches_of(canary, guards)
    ]
    return f"{'; '.join(parts)}, {breaches} breaches in a row"


def too_few_reason(job: DeploymentExecutionInput, bake: Bake, canary: VariantObservation) -> str:
    return (
        f"too few invocations: the new version served {canary.invocations} of the {job.guards.min_invocations} "
        f"needed in its last guard window at {job.weights[bake.step]:g}% of traffic, after {bake.extensions} "
        f"bake extensions of {job.bake_seconds} s; a guard cannot judge it, so it is rolled back"
    )


def read_guards(store: JobStore, cloudwatch: Any, request: GuardRead, settings: Settings) -> GuardReading:
    job, bake = request.job, request.bake
    current = store.get(job.job_id)
    details = current.details if current else {}
    if current is None or current.status == JobStatus.CANCELLED or details.get("rollback_requested"):
        cancelled = current is None or current.status == JobStatus.CANCELLED
        update_step(
            store, job.job_id, details, bake.step, end=True, verdict="cancelled" if cancelled else "rolled_back"
        )
        return GuardReading(next="rollback_requested", bake=bake, reason="rollback requested")
    baseline = [variant.name for variant in baseline_of(details)]
    totals = read_window(
        cloudwatch, job, [job.variant_name, *baseline], request.interval_seconds, settings.metrics_namespace
    )
    observed = {"canary": totals[0].observation(), "baseline": combined(totals[1:]).observation()}
    verdict = verdict_of(observed["canary"], job.guards)
    breaches = bake.breaches + 1 if verdict == "breached" else (0 if verdict == "passed" else bake.breaches)
    after = bake.model_copy(
        update={"elapsed": bake.elapsed + request.interval_seconds, "breaches": breaches, "readings": bake.readings + 1}
    )
    facts = {"observed": observed, "verdict": verdict, "breaches": breaches}
    if verdict == "breached" and breaches >= job.guards.consecutive_breaches:
        update_step(store, job.job_id, details, bake.step, end=True, **facts)
        reason = trip_reason(observed, job.guards, breaches)
        return GuardReading(next="tripped", verdict=verdict, reason=reason, bake=after, observed=observed)
    budget = job.bake_seconds * (1 + after.extensions)
    if after.elapsed < budget or verdict == "breached":
        # Still baking; a breach at the end waits for the next reading, which trips or clears it.
        update_step(store, job.job_id, details, bake.step, end=False, **facts)
        return GuardReading(next="continue", verdict=verdict, bake=after, observed=observed)
    if verdict == "insufficient_traffic":
        if after.extensions < request.max_extensions:
            update_step(store, job.job_id, details, bake.step, end=False, **facts)
            extended = after.model_copy(update={"extensions": after.extensions + 1})
            return GuardReading(next="continue", verdict=verdict, bake=extended, observed=observed)
        update_step(store, job.job_id, details, bake.step, end=True, **facts)
        reason = too_few_reason(job, after, observed["canary"])
        return GuardReading(next="too_few", verdict=verdict, reason=reason, bake=after, observed=observed)
    update_step(store, job.job_id, details, bake.step, end=True, **facts)
    return GuardReading(next="passed", verdict=verdict, bake=after, observed=observed)
