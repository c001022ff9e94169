"""The deployment's decisions without a workflow: names, weights per step, the verdict of a guard reading and
its reason in words, the bake's next move, the outcome table, the plan's refusals, and the definition
checked against the template (every placeholder declared, every Task bounded, retried and caught)."""

from __future__ import annotations

import json
import re

import pytest

from sluice.jobs.kinds.deployment.endpoint_updates import shares, step_weights
from sluice.jobs.kinds.deployment.guards import (
    Bake,
    GuardRead,
    Totals,
    breaches_of,
    read_guards,
    trip_reason,
    verdict_of,
    window_seconds,
)
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput, ResolvedGuards, VariantObservation
from sluice.jobs.kinds.deployment.names import canary_config_name, promoted_config_name
from sluice.jobs.kinds.deployment.plan import BaselineVariant, DeploymentNotPossible, plan_deployment
from sluice.settings import Settings
from tests.conftest import ROOT

GUARDS = ResolvedGuards(
    error_rate_percent=1, p99_latency_ms=2000, low_confidence_percent=5, min_invocations=50, consecutive_breaches=2
)
INPUT = json.loads((ROOT / "statemachines" / "deployment.input.json").read_text())
DEFINITION = (ROOT / "statemachines" / "deployment.asl.json").read_text()


def job(**changes) -> DeploymentExecutionInput:
    return DeploymentExecutionInput.model_validate({**INPUT, **changes})


def test_config_names_carry_the_job_and_stay_within_sagemakers_limit():
    assert canary_config_name("sluice-iris", "job-0123456789abcdef") == "sluice-iris-01234567-canary"
    assert promoted_config_name("sluice-iris", "job-0123456789abcdef") == "sluice-iris-01234567-promoted"
    long = canary_config_name("sluice-" + "x" * 60, "job-0123456789abcdef")
    assert len(long) <= 63
    assert long.endswith("-01234567-canary")


def test_step_weights_keep_the_baselines_proportions():
    baseline = [
        BaselineVariant(name="a", model_name="m", weight=3),
        BaselineVariant(name="b", model_name="m", weight=1),
    ]
    assert step_weights(baseline, "new", 20) == {"a": 60.0, "b": 20.0, "new": 20.0}
    assert step_weights(baseline, "new", 100) == {"a": 0.0, "b": 0.0, "new": 100.0}
    assert shares({"a": 1, "b": 3}) == {"a": 25.0, "b": 75.0}


def observation(invocations=100, errors=0, p99_us=40_000.0, predictions=100, low=0) -> VariantObservation:
    return Totals(
        invocations=invocations, errors=errors, p99_us=p99_us, predictions=predictions, low_confidence=low
    ).observation()


def test_the_verdict_of_one_reading():
    assert verdict_of(observation(invocations=49, errors=49), GUARDS) == "insufficient_traffic"
    assert verdict_of(observation(), GUARDS) == "passed"
    assert verdict_of(observation(errors=2), GUARDS) == "breached"
    assert verdict_of(observation(p99_us=2_000_001), GUARDS) == "breached"
    assert verdict_of(observation(low=6), GUARDS) == "breached"
    # Exactly at a limit is not above it; no confidence read is no breach.
    assert verdict_of(observation(errors=1, p99_us=2_000_000, low=5), GUARDS) == "passed"
    assert verdict_of(observation(predictions=0), GUARDS) == "passed"


def test_the_reason_names_each_breached_guard_with_the_canarys_and_the_baselines_numbers():
    observed = {"canary": observation(invocations=60, errors=20, low=50), "baseline": observation(low=1)}
    assert [guard for guard, _ in breaches_of(observed["canary"], GUARDS)] == [
        "error_rate_percent",
        "low_confidence_percent",
    ]
    assert trip_reason(observed, GUARDS, 2) == (
        "error_rate_percent: canary 33.3% > 1% over 60 invocations (baseline 0.0%); "
        "low_confidence_percent: canary 50.0% > 5% over 60 invocations (baseline 1.0%), 2 breaches in a row"
    )


def test_the_guard_window_is_whole_minutes():
    assert [window_seconds(s) for s in (1, 60, 61, 300)] == [60, 60, 120, 300]


class FakeStore:
    def __init__(self, status="RUNNING", details=None):
        from sluice.jobs.models import Job, JobKind, JobStatus

        self.job = Job(
            job_id=INPUT["job_id"],
            caller="platform",
            kind=JobKind.DEPLOYMENT,
            model="iris",
            input_location="sagemaker://sluice-iris",
            status=JobStatus(status),
            details={
                "baseline_variants": [{"name": "v1", "model_name": "m", "weight": 1}],
                "steps": [],
                **(details or {}),
            },
        )

    def get(self, _job_id):
        return self.job

    def merge_details(self, _job_id, **details):
        self.job.details.update(details)
        return True


class FakeCloudWatch:
    def __init__(self, canary: dict[str, float], baseline: dict[str, float]):
        self.values = {"0": canary, "1": baseline}

    def get_metric_data(self, MetricDataQueries, **_):
        results = []
        for query in MetricDataQueries:
            metric, index = query["Id"].split("_")
            value = self.values[index].get(metric)
            results.append({"Id": query["Id"], "Values": [] if value is None else [value]})
        return {"MetricDataResults": results}


def reading(bake: Bake, canary: dict, store=None, **job_changes):
    request = GuardRead(job=job(bake_seconds=2, **job_changes), bake=bake, interval_seconds=1, max_extensions=2)
    baseline = {"invocations": 100, "errors": 0, "latency": 30_000, "predictions": 100, "lowconfidence": 0}
    return read_guards(store or FakeStore(), FakeCloudWatch(canary, baseline), request, Settings())


GOOD = {"invocations": 100, "errors": 0, "latency": 40_000, "predictions": 100, "lowconfidence": 1}
BAD = {"invocations": 60, "errors": 20, "latency": 40_000, "predictions": 40, "lowconfidence": 0}
QUIET = {"invocations": 3, "errors": 0}


def test_the_bake_moves_on_only_after_bake_seconds_and_trips_on_consecutive_breaches():
    assert reading(Bake(step=0), GOOD).next == "continue"
    passed = reading(Bake(step=0, elapsed=1), GOOD)
    assert (passed.next, passed.bake.elapsed, passed.bake.readings) == ("passed", 2, 1)
    first = reading(Bake(step=0), BAD)
    assert (first.next, first.bake.breaches) == ("continue", 1)
    # A breach at the bake's end waits for the next reading rather than passing.
    assert reading(Bake(step=0, elapsed=1), BAD).next == "continue"
    tripped = reading(first.bake, BAD)
    assert tripped.next == "tripped"
    assert tripped.reason.endswith("2 breaches in a row")
    assert reading(first.bake, GOOD).bake.breaches == 0


def test_too_few_invocations_extend_the_bake_then_roll_back():
    extended = reading(Bake(step=0, elapsed=1), QUIET)
    assert (extended.next, extended.bake.extensions) == ("continue", 1)
    assert reading(Bake(step=0, elapsed=5, extensions=2), QUIET).next == "too_few"
    assert reading(Bake(step=0, elapsed=5, extensions=2), QUIET).reason.startswith(
        "too few invocations: the new version served 3 of the 50 needed"
    )


@pytest.mark.parametrize(("status", "details"), [("CANCELLED", {}), ("RUNNING", {"rollback_requested": {"by": "a"}})])
def test_a_reading_sees_a_cancel_or_a_rollback_request(status, details):
    assert reading(Bake(step=0), GOOD, store=FakeStore(status, details)).next == "rollback_requested"


class FakeSageMaker:
    def __init__(self, status="InService", variants=("v1",)):
        self.status, self.variants = status, variants

    def describe_endpoint(self, EndpointName):
        return {
            "EndpointName": EndpointName,
            "EndpointStatus": self.status,
            "EndpointConfigName": "base",
            "ProductionVariants": [
                {"VariantName": v, "CurrentWeight": 1.0, "CurrentInstanceCount": 2} for v in self.variants
            ],
        }

    def describe_endpoint_config(self, EndpointConfigName):
        return {
            "ProductionVariants": [
                {"VariantName": v, "ModelName": f"m-{v}", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
                for v in self.variants
            ]
        }

    def describe_model(self, ModelName):
        return {"ModelName": ModelName}


def test_the_plan_records_the_baseline_and_asks_for_approval_above_the_line():
    plan = plan_deployment(FakeSageMaker(), job(), Settings())
    assert plan.needs_approval is False
    assert plan.record["baseline_endpoint_config"] == "base"
    assert plan.record["baseline_variants"] == [
        {"name": "v1", "model_name": "m-v1", "weight": 1.0, "instance_type": "ml.m5.large", "instance_count": 2}
    ]
    assert (plan.step_count, plan.promote) == (3, True)
    assert plan_deployment(FakeSageMaker(), job(instance_type="ml.p3.2xlarge"), Settings()).needs_approval is True


@pytest.mark.parametrize(
    ("sagemaker", "words"),
    [(FakeSageMaker(status="Updating"), "not InService"), (FakeSageMaker(variants=("v2",)), "already runs a variant")],
)
def test_the_plan_refuses_an_endpoint_it_cannot_deploy_to(sagemaker, words):
    with pytest.raises(DeploymentNotPossible, match=words):
        plan_deployment(sagemaker, job(), Settings())


def test_the_definition_against_the_template():
    template = (ROOT / "template.yaml").read_text()
    block = template[template.index("  DeploymentStateMachine:\n") :]
    block = block[: block.index("      Logging:")]
    declared = set(re.findall(r"^        (\w+): ", block, re.MULTILINE))
    used = set(re.findall(r"\$\{(\w+)\}", DEFINITION))
    assert used == declared
    states = json.loads(re.sub(r"\$\{\w+\}", "1", DEFINITION))
    assert states["TimeoutSeconds"] == 1
    for name, state in states["States"].items():
        if state["Type"] != "Task":
            continue
        assert state.get("TimeoutSeconds") or state.get("TimeoutSecondsPath"), name
        assert any("Lambda.ServiceException" in r["ErrorEquals"] for r in state["Retry"]), name
        assert state["Catch"][-1]["ErrorEquals"] == ["States.ALL"], name
    # Every ending path releases the endpoint first.
    for name, state in states["States"].items():
        if state["Type"] in ("Succeed", "Fail") and name != "Job finished":
            assert name in {"Deployment rollback failed", "Failure not recorded", "Endpoint not released"}
