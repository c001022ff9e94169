"""statemachines/deployment.asl.json run by moto's interpreter, with the real handlers in-process.

Each test creates its own endpoint in moto (tests/deployment_support.EndpointWorld says what is steered:
UpdateEndpoint, Updating, per-variant metrics per guard reading, autoscaling errors).
"""

from __future__ import annotations

import json
import uuid

import pytest

from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput, ResolvedAutoscaling, ResolvedGuards
from sluice.jobs.models import Job, JobKind, JobStatus
from tests.conftest import FIXTURES
from tests.deployment_support import Traffic, deployment_stack
from tests.workflow_support import (
    decide,
    history,
    new_job_id,
    pending_approval,
    start_execution,
    states_entered,
    wait_for_execution,
)

MACHINE = "DeploymentStateMachineArn"
GOOD = Traffic(invocations=100, errors=0, latency_ms=40, low_confidence=1)
BAD = Traffic(invocations=60, errors=20, latency_ms=40, low_confidence=1)
QUIET = Traffic(invocations=5)


@pytest.fixture(scope="module")
def stack():
    catalog = json.loads((FIXTURES / "catalog.json").read_text())
    with deployment_stack("sluice-deployment-flow", catalog) as deployed:
        yield deployed


class World:
    """One endpoint of a test: its name, model and variants."""

    def __init__(self, stack, variants: dict[str, float] | None = None) -> None:
        self.stack = stack
        tag = uuid.uuid4().hex[:8]
        self.endpoint = f"sluice-ep-{tag}"
        self.model = f"iris-{tag}"
        self.variants = variants or {"v1": 1.0}
        sagemaker = stack.client("sagemaker")
        for name in [*self.variants, "new"]:
            sagemaker.create_model(
                ModelName=f"{self.endpoint}-{name}",
                ExecutionRoleArn="arn:aws:iam::123456789012:role/sagemaker",
                PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1"},
            )
        self.baseline_config = f"{self.endpoint}-base"
        sagemaker.create_endpoint_config(
            EndpointConfigName=self.baseline_config,
            ProductionVariants=[
                {
                    "VariantName": name,
                    "ModelName": f"{self.endpoint}-{name}",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 2,
                    "InitialVariantWeight": weight,
                }
                for name, weight in self.variants.items()
            ],
        )
        sagemaker.create_endpoint(EndpointName=self.endpoint, EndpointConfigName=self.baseline_config)
        stack.endpoints.models[self.endpoint] = self.model

    def script(self, *readings: dict[str, Traffic]) -> None:
        self.stack.endpoints.readings[self.endpoint] = list(readings)

    def reading(self, canary: Traffic, baseline: Traffic = GOOD) -> dict[str, Traffic]:
        return {"v2": canary, **dict.fromkeys(self.variants, baseline)}

    def described(self) -> dict:
        return self.stack.client("sagemaker").describe_endpoint(EndpointName=self.endpoint)

    def serving(self) -> dict[str, float]:
        described = self.described()
        variants = described["ProductionVariants"]
        total = sum(v.get("CurrentWeight", 0) for v in variants)
        return {v["VariantName"]: round(v.get("CurrentWeight", 0) * 100 / total, 1) for v in variants}

    def scalable_targets(self) -> list[dict]:
        return self.stack.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")[
            "ScalableTargets"
        ]

    def policies(self) -> list[dict]:
        return [
            p
            for p in self.stack.client("application-autoscaling").describe_scaling_policies(
                ServiceNamespace="sagemaker"
            )["ScalingPolicies"]
            if p["ResourceId"].startswith(f"endpoint/{self.endpoint}/")
        ]

    def lock(self, job_id: str) -> None:
        self.stack.client("dynamodb").put_item(
            TableName=self.stack.deployment.outputs["DeploymentLocksTableName"],
            Item={"endpoint_name": {"S": self.endpoint}, "job_id": {"S": job_id}},
        )

    def locked(self) -> bool:
        item = self.stack.client("dynamodb").get_item(
            TableName=self.stack.deployment.outputs["DeploymentLocksTableName"],
            Key={"endpoint_name": {"S": self.endpoint}},
        )
        return "Item" in item


def submit(
    world: World,
    *,
    strategy: str = "canary",
    weights: list[float] | None = None,
    promote: bool = True,
    bake_seconds: int = 1,
    instance_type: str = "ml.m5.large",
    consecutive_breaches: int = 2,
) -> DeploymentExecutionInput:
    job_id = new_job_id()
    execution_input = DeploymentExecutionInput(
        job_id=job_id,
        caller="platform",
        model=world.model,
        endpoint_name=world.endpoint,
        model_name=f"{world.endpoint}-new",
        variant_name="v2",
        instance_type=instance_type,
        instance_count=1,
        strategy=strategy,
        weights=weights or [5, 25, 100],
        promote=promote,
        bake_seconds=bake_seconds,
        guards=ResolvedGuards(
            error_rate_percent=1,
            p99_latency_ms=2000,
            low_confidence_percent=5,
            min_invocations=50,
            consecutive_breaches=consecutive_breaches,
        ),
        autoscaling=ResolvedAutoscaling(
            min=1, max=4, target_invocations_per_instance=500, scale_in_cooldown=300, scale_out_cooldown=60
        ),
    )
    world.stack.store().create(
        Job(
            job_id=job_id,
            caller="platform",
            kind=JobKind.DEPLOYMENT,
            model=world.model,
            input_location=f"sagemaker://{world.endpoint}",
            details={"endpoint_name": world.endpoint, "model_name": execution_input.model_name},
        )
    )
    world.lock(job_id)
    return execution_input


def start(world: World, execution_input: DeploymentExecutionInput) -> str:
    return start_execution(world.stack, MACHINE, json.loads(execution_input.model_dump_json()))


def run(world: World, execution_input: DeploymentExecutionInput, timeout: float = 90) -> dict:
    return wait_for_execution(world.stack, start(world, execution_input), timeout)


def job_of(world: World, execution_input: DeploymentExecutionInput) -> Job:
    return world.stack.store().get(execution_input.job_id)


def assert_rolled_back(world: World, job: Job) -> None:
    assert job.details["outcome"] == "rolled_back"
    described = world.described()
    assert described["EndpointConfigName"] == world.baseline_config
    assert set(world.serving()) == set(world.variants)
    assert not world.locked()


# ---------------------------------------------------------------------- promoted
def test_canary_promoted_through_every_step_with_autoscaling_and_the_old_variant_removed(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    stack.endpoints.updating_checks = 1
    try:
        execution_input = submit(world)
        execution = run(world, execution_input)
    finally:
        stack.endpoints.updating_checks = 0

    assert execution["status"] == "SUCCEEDED", execution
    path = states_entered(stack, execution["executionArn"])
    assert path[:5] == [
        "Plan deployment",
        "Approval needed?",
        "Mark job running",
        "Job still wanted?",
        "Add new version at weight 0",
    ]
    assert path.count("Shift traffic") == 3
    assert "Count endpoint check" in path
    assert path[-5:] == [
        "Attach autoscaling",
        "Record promotion",
        "Mark job succeeded",
        "Release endpoint",
        "Job finished",
    ]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["outcome"] == "promoted"
    assert job.details["baseline_endpoint_config"] == world.baseline_config
    assert job.details["baseline_variants"] == [
        {
            "name": "v1",
            "model_name": f"{world.endpoint}-v1",
            "weight": 1.0,
            "instance_type": "ml.m5.large",
            "instance_count": 2,
        }
    ]
    assert [step["weight"] for step in job.details["steps"]] == [5, 25, 100]
    assert [step["verdict"] for step in job.details["steps"]] == ["passed"] * 3
    first = job.details["steps"][0]
    assert first["observed"]["canary"]["invocations"] == 100
    assert first["observed"]["canary"]["error_rate_percent"] == 0
    assert first["observed"]["canary"]["p99_latency_ms"] == pytest.approx(40)
    assert first["observed"]["canary"]["low_confidence_percent"] == pytest.approx(1)
    assert first["observed"]["baseline"]["invocations"] == 100
    assert first["started"]
    assert first["ended"]
    # The weights moved 5 -> 25 -> 100, then the new version alone.
    moves = [what for endpoint, kind, what in stack.endpoints.updates if endpoint == world.endpoint]
    assert moves[0] == job.details["canary_endpoint_config"]
    assert moves[1:4] == [{"v1": 95.0, "v2": 5.0}, {"v1": 75.0, "v2": 25.0}, {"v1": 0.0, "v2": 100.0}]
    assert moves[4] == job.details["promoted_endpoint_config"]
    described = world.described()
    assert described["EndpointConfigName"] == job.details["promoted_endpoint_config"]
    assert [v["VariantName"] for v in described["ProductionVariants"]] == ["v2"]
    [target] = [t for t in world.scalable_targets() if t["ResourceId"] == f"endpoint/{world.endpoint}/variant/v2"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableDimension"]) == (
        1,
        4,
        "sagemaker:variant:DesiredInstanceCount",
    )
    [policy] = world.policies()
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert config["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert (config["TargetValue"], config["ScaleInCooldown"], config["ScaleOutCooldown"]) == (500, 300, 60)
    assert job.details["autoscaling"]["attached"] is True
    assert not world.locked()


# ---------------------------------------------------------------------- guards
def test_breach_at_the_first_step_rolls_back_naming_the_guard_and_its_numbers(stack):
    world = World(stack)
    world.script(world.reading(BAD))
    execution_input = submit(world)
    execution = run(world, execution_input)

    assert execution["status"] == "SUCCEEDED"
    path = states_entered(stack, execution["executionArn"])
    assert path.count("Shift traffic") == 1
    assert path.count("Read guards") == 2
    assert path[path.index("Guard tripped") :] == [
        "Guard tripped",
        "Roll back traffic",
        "Start rollback wait",
        "Wait for rollback",
        "Check rollback",
        "Rollback done?",
        "Record outcome",
        "Outcome?",
        "Mark job failed with outcome",
        "Release endpoint",
        "Job finished",
    ]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    reason = "error_rate_percent: canary 33.3% > 1% over 60 invocations (baseline 0.0%), 2 breaches in a row"
    assert job.details["rollback_reason"] == reason
    assert job.failure_reason == reason
    assert job.details["failure_type"] == "GuardTripped"
    [step] = job.details["steps"]
    assert (step["weight"], step["verdict"], step["breaches"]) == (5, "breached", 2)
    assert_rolled_back(world, job)
    assert world.serving() == {"v1": 100.0}


def test_breach_at_a_later_step_rolls_back_from_there(stack):
    world = World(stack)
    slow = Traffic(invocations=80, latency_ms=2500)
    world.script(world.reading(GOOD), world.reading(slow))
    execution_input = submit(world)
    run(world, execution_input)

    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert [s["verdict"] for s in job.details["steps"]] == ["passed", "breached"]
    assert job.details["rollback_reason"].startswith("p99_latency_ms: canary 2500 ms > 2000 ms over 80 invocations")
    assert_rolled_back(world, job)


def test_a_single_breach_then_recovery_does_not_trip(stack):
    world = World(stack)
    low = Traffic(invocations=100, low_confidence=30)
    world.script(world.reading(low), world.reading(GOOD))
    execution_input = submit(world, weights=[50, 100], bake_seconds=2)
    run(world, execution_input)

    job = job_of(world, execution_input)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["outcome"] == "promoted"


def test_too_few_invocations_extends_the_bake_twice_then_rolls_back(stack):
    world = World(stack)
    world.script(world.reading(QUIET))
    execution_input = submit(world)
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path.count("Read guards") == 3  # the bake and DeploymentMaxBakeExtensions (2) extensions
    assert "Too few invocations" in path
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "TooFewInvocations"
    assert job.details["rollback_reason"].startswith("too few invocations: the new version served 5 of the 50 needed")
    assert job.details["steps"][0]["verdict"] == "insufficient_traffic"
    assert_rolled_back(world, job)


# ---------------------------------------------------------------------- operators
def test_manual_rollback_mid_bake(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    execution_input = submit(world, bake_seconds=5)
    store = stack.store()
    request = {"by": "alice", "reason": "customer complaints", "at": "2026-12-02T00:00:00Z"}
    stack.endpoints.on_reading[world.endpoint] = {
        1: lambda: store.merge_details(execution_input.job_id, rollback_requested=request)
    }
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert "Rollback requested" in path
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason == "rolled back by alice: customer complaints"
    assert job.details["steps"][0]["verdict"] == "rolled_back"
    assert_rolled_back(world, job)


def test_cancel_mid_bake_rolls_back_and_the_job_stays_cancelled(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    execution_input = submit(world, bake_seconds=5)
    store = stack.store()

    def cancel() -> None:
        store.transition(execution_input.job_id, JobStatus.CANCELLED)
        store.merge_details(execution_input.job_id, rollback_requested={"by": "bob", "reason": "wrong model"})

    stack.endpoints.on_reading[world.endpoint] = {0: cancel}
    execution = run(world, execution_input)

    assert execution["status"] == "SUCCEEDED"
    path = states_entered(stack, execution["executionArn"])
    assert path[-3:] == ["Outcome?", "Release endpoint", "Job finished"]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.CANCELLED
    assert job.details["rollback_reason"] == "cancelled by bob: wrong model"
    assert job.details["steps"][0]["verdict"] == "cancelled"
    assert_rolled_back(world, job)


# ---------------------------------------------------------------------- failures
def test_autoscaling_attach_failure_keeps_the_promotion_and_fails_the_job(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    stack.endpoints.attach_errors[world.endpoint] = [("ValidationException", "Unable to create the alarm")]
    execution_input = submit(world, weights=[100])
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[-5:] == [
        "Record autoscaling failure",
        "Outcome?",
        "Mark job failed with outcome",
        "Release endpoint",
        "Job finished",
    ]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "AutoscalingNotAttached"
    assert "Unable to create the alarm" in job.failure_reason
    assert job.details["outcome"] == "promoted"
    assert job.details["autoscaling"]["attached"] is False
    # The new version keeps serving; nothing half-attached is left.
    assert world.serving() == {"v2": 100.0}
    assert [t for t in world.scalable_targets() if world.endpoint in t["ResourceId"]] == []


def test_a_silent_rollback_is_detected_and_the_deployment_rolls_back(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    stack.endpoints.silent_rollback.add(world.endpoint)
    execution_input = submit(world)
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path[4:7] == ["Add new version at weight 0", "Start endpoint wait", "Wait for endpoint"]
    assert path[7:9] == ["Check endpoint", "Roll back traffic"]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert job.details["failure_type"] == "SilentRollback"
    assert "rolled back silently" in job.failure_reason
    assert_rolled_back(world, job)


def test_catch_path_a_failing_shift_rolls_back(stack, monkeypatch):
    from moto.core.exceptions import JsonRESTError
    from moto.sagemaker.models import SageMakerModelBackend

    world = World(stack)
    world.script(world.reading(GOOD))
    original = SageMakerModelBackend.update_endpoint_weights_and_capacities

    def refuse(backend, endpoint_name, desired_weights_and_capacities):
        if endpoint_name == world.endpoint and any(d["DesiredWeight"] == 25 for d in desired_weights_and_capacities):
            raise JsonRESTError("AccessDeniedException", "not authorized to perform UpdateEndpointWeightsAndCapacities")
        return original(backend, endpoint_name, desired_weights_and_capacities)

    monkeypatch.setattr(SageMakerModelBackend, "update_endpoint_weights_and_capacities", refuse)
    execution_input = submit(world)
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path.count("Shift traffic") == 2
    assert path[path.index("Shift traffic", path.index("Shift traffic") + 1) + 1] == "Roll back traffic"
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert "not authorized" in job.failure_reason
    assert_rolled_back(world, job)


def test_a_failing_rollback_ends_in_a_fail_state_and_records_why(stack):
    world = World(stack)
    world.script(world.reading(BAD))
    # The rollback's UpdateEndpoint is refused (the first UpdateEndpoint, adding the new version, works).
    execution_input = submit(world, consecutive_breaches=1)
    stack.endpoints.on_reading[world.endpoint] = {
        0: lambda: stack.endpoints.update_errors.__setitem__(
            world.endpoint, [("ValidationException", "EndpointConfig is being deleted")] * 5
        )
    }
    execution = run(world, execution_input)

    assert execution["status"] == "FAILED"
    path = states_entered(stack, execution["executionArn"])
    assert path[-4:] == [
        "Rollback failed",
        "Mark rollback failed",
        "Release endpoint after failed rollback",
        "Deployment rollback failed",
    ]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith("The deployment had to roll back and the rollback failed")
    assert not world.locked()


def test_plan_refuses_an_endpoint_that_already_runs_the_variant_name(stack):
    world = World(stack, variants={"v2": 1.0})
    execution_input = submit(world)
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert path == ["Plan deployment", "Mark job failed", "Release endpoint", "Job finished"]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert "already runs a variant named v2" in job.failure_reason
    assert stack.endpoints.updates == [u for u in stack.endpoints.updates if u[0] != world.endpoint]


# ---------------------------------------------------------------------- shapes
def test_linear_with_two_baseline_variants_keeps_their_proportions(stack):
    world = World(stack, variants={"v1": 3.0, "v1b": 1.0})
    world.script(world.reading(GOOD))
    execution_input = submit(world, strategy="linear", weights=[50, 100])
    run(world, execution_input)

    job = job_of(world, execution_input)
    assert job.status == JobStatus.SUCCEEDED
    moves = [
        what for endpoint, kind, what in stack.endpoints.updates if endpoint == world.endpoint and kind == "weights"
    ]
    assert moves == [{"v1": 37.5, "v1b": 12.5, "v2": 50.0}, {"v1": 0.0, "v1b": 0.0, "v2": 100.0}]
    assert [v["VariantName"] for v in world.described()["ProductionVariants"]] == ["v2"]


def test_blue_green_keeps_the_old_variant_at_zero_during_the_bake_then_removes_it(stack):
    world = World(stack)
    world.script(world.reading(GOOD, baseline=Traffic(invocations=0)))
    seen = {}
    stack.endpoints.on_reading[world.endpoint] = {0: lambda: seen.update(world.serving())}
    execution_input = submit(world, strategy="blue_green", weights=[100])
    run(world, execution_input)

    assert seen == {"v1": 0.0, "v2": 100.0}
    job = job_of(world, execution_input)
    assert job.status == JobStatus.SUCCEEDED
    assert [v["VariantName"] for v in world.described()["ProductionVariants"]] == ["v2"]


def test_ab_keeps_its_split_and_is_never_promoted(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    execution_input = submit(world, strategy="ab", weights=[50], promote=False)
    execution = run(world, execution_input)

    path = states_entered(stack, execution["executionArn"])
    assert "Promote new version" not in path
    assert "Attach autoscaling" not in path
    job = job_of(world, execution_input)
    assert job.status == JobStatus.SUCCEEDED
    assert job.details["outcome"] == "split"
    assert world.serving() == {"v1": 50.0, "v2": 50.0}
    assert world.scalable_targets() == [t for t in world.scalable_targets() if world.endpoint not in t["ResourceId"]]


# ---------------------------------------------------------------------- approvals


def test_approval_approved_then_deployed(stack, lambda_context):
    world = World(stack)
    world.script(world.reading(GOOD))
    execution_input = submit(world, instance_type="ml.p3.2xlarge", weights=[100])
    arn = start(world, execution_input)
    approval = pending_approval(stack, "deployment", execution_input.job_id)
    assert approval.kind == "deployment"
    assert stack.store().get(execution_input.job_id).status == JobStatus.AWAITING_APPROVAL
    assert decide(lambda_context, "approve", approval.approval_id, "GPU canary")["statusCode"] == 200

    assert wait_for_execution(stack, arn, timeout=60)["status"] == "SUCCEEDED"
    assert states_entered(stack, arn)[2] == "Wait for an operator's approval"
    assert job_of(world, execution_input).status == JobStatus.SUCCEEDED


def test_approval_denied_changes_nothing(stack, lambda_context):
    world = World(stack)
    execution_input = submit(world, instance_type="ml.p3.2xlarge")
    arn = start(world, execution_input)
    approval = pending_approval(stack, "deployment", execution_input.job_id)
    decide(lambda_context, "deny", approval.approval_id, "too large")

    wait_for_execution(stack, arn)
    assert states_entered(stack, arn)[2:4] == ["Wait for an operator's approval", "Mark job failed"]
    job = job_of(world, execution_input)
    assert job.status == JobStatus.FAILED
    assert job.failure_reason == "Instance approval denied by platform: too large"
    assert [u for u in stack.endpoints.updates if u[0] == world.endpoint] == []
    assert not world.locked()


def test_history_has_no_unexpected_task_failures_on_the_happy_path(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    execution_input = submit(world, weights=[100])
    execution = run(world, execution_input)
    failures = [e for e in history(stack, execution["executionArn"]) if "taskFailedEventDetails" in e]
    assert failures == []


def test_a_scaled_old_variant_is_detached_before_the_promotion_removes_it(stack):
    world = World(stack)
    world.script(world.reading(GOOD))
    scaling = stack.client("application-autoscaling")
    old = f"endpoint/{world.endpoint}/variant/v1"
    # Attached by an earlier deployment; SageMaker (the scripted UpdateEndpoint) refuses to remove it while scaled.
    scaling.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=old,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=1,
        MaxCapacity=4,
    )
    execution_input = submit(world, weights=[100])
    run(world, execution_input)

    job = job_of(world, execution_input)
    assert job.status == JobStatus.SUCCEEDED
    targets = [t["ResourceId"] for t in world.scalable_targets() if world.endpoint in t["ResourceId"]]
    assert targets == [f"endpoint/{world.endpoint}/variant/v2"]
