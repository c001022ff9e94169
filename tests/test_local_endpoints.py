"""Endpoint updates on the embedded SageMaker as on AWS (UpdateEndpoint, weight updates: Updating, then InService),
and the local SageMaker runtime routing by the live weights, through real boto3 clients and model processes."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sluice_local.artifacts import TrainedModels
from sluice_local.model_lookup import ModelLookup
from sluice_local.sagemaker_runtime import LocalSageMakerRuntime

UPDATE_SECONDS = 0.3
ROLE = "arn:aws:iam::123456789012:role/sluice-local-sagemaker"
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module", autouse=True)
def quick_updates() -> Iterator[None]:
    patcher = pytest.MonkeyPatch()
    patcher.setenv("SLUICE_LOCAL_ENDPOINT_UPDATE_SECONDS", str(UPDATE_SECONDS))
    yield
    patcher.undo()


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def sagemaker(moto) -> Any:
    client = _client("sagemaker", moto.url)
    for version in ("v1", "v2"):
        client.create_model(
            ModelName=f"iris-{version}",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={"Image": "sluice/iris:local", "Environment": {"SLUICE_MODEL_VERSION": version}},
        )
    return client


def _variant(name: str, model: str, weight: float | None = None, count: int = 1) -> dict[str, Any]:
    variant = {"VariantName": name, "ModelName": model, "InitialInstanceCount": count, "InstanceType": "ml.m5.large"}
    if weight is not None:
        variant["InitialVariantWeight"] = weight
    return variant


def _endpoint(sagemaker: Any, name: str, *variants: dict[str, Any]) -> None:
    sagemaker.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=list(variants))
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def _shown(sagemaker: Any, name: str) -> dict[str, dict[str, Any]]:
    return {v["VariantName"]: v for v in sagemaker.describe_endpoint(EndpointName=name)["ProductionVariants"]}


def _wait_in_service(sagemaker: Any, name: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = sagemaker.describe_endpoint(EndpointName=name)
        if described["EndpointStatus"] != "Updating" or time.monotonic() > deadline:
            return described
        time.sleep(0.05)


def test_a_new_endpoint_shows_its_weights_and_counts_from_its_config(sagemaker):
    _endpoint(sagemaker, "ep-new", _variant("main", "iris-v1", count=2), _variant("canary", "iris-v2", 0))

    variants = _shown(sagemaker, "ep-new")

    # InitialVariantWeight defaults to 1.0; a weight of 0 is shown (moto drops both).
    assert variants["main"] == {
        "VariantName": "main",
        "CurrentWeight": 1.0,
        "DesiredWeight": 1.0,
        "CurrentInstanceCount": 2,
        "DesiredInstanceCount": 2,
    }
    assert variants["canary"]["CurrentWeight"] == variants["canary"]["DesiredWeight"] == 0.0


def test_update_endpoint_is_updating_for_a_moment_then_runs_the_new_config(sagemaker):
    _endpoint(sagemaker, "ep-update", _variant("main", "iris-v1", 1))
    sagemaker.create_endpoint_config(
        EndpointConfigName="ep-update-canary",
        ProductionVariants=[_variant("main", "iris-v1", 1), _variant("canary", "iris-v2", 0)],
    )

    sagemaker.update_endpoint(
        EndpointName="ep-update",
        EndpointConfigName="ep-update-canary",
        RetainAllVariantProperties=False,
        DeploymentConfig={
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}
            }
        },
    )
    during = sagemaker.describe_endpoint(EndpointName="ep-update")
    with pytest.raises(sagemaker.exceptions.ClientError) as refused:
        sagemaker.update_endpoint(EndpointName="ep-update", EndpointConfigName="ep-update-config")
    with pytest.raises(sagemaker.exceptions.ClientError) as refused_weights:
        sagemaker.update_endpoint_weights_and_capacities(
            EndpointName="ep-update", DesiredWeightsAndCapacities=[{"VariantName": "main", "DesiredWeight": 2}]
        )
    after = _wait_in_service(sagemaker, "ep-update")

    # While updating the old config still serves; the new one is pending, as AWS shows it.
    assert during["EndpointStatus"] == "Updating"
    assert during["EndpointConfigName"] == "ep-update-config"
    assert during["PendingDeploymentSummary"]["EndpointConfigName"] == "ep-update-canary"
    assert [v["VariantName"] for v in during["ProductionVariants"]] == ["main"]
    for caught in (refused, refused_weights):
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert "Cannot update in-progress endpoint" in caught.value.response["Error"]["Message"]
    assert after["EndpointStatus"] == "InService"
    assert after["EndpointConfigName"] == "ep-update-canary"
    assert "PendingDeploymentSummary" not in after
    assert {v["VariantName"]: v["CurrentWeight"] for v in after["ProductionVariants"]} == {"main": 1.0, "canary": 0.0}


def test_update_endpoint_to_a_missing_config_or_endpoint_is_refused(sagemaker):
    _endpoint(sagemaker, "ep-missing", _variant("main", "iris-v1", 1))

    with pytest.raises(sagemaker.exceptions.ClientError) as no_config:
        sagemaker.update_endpoint(EndpointName="ep-missing", EndpointConfigName="no-such-config")
    with pytest.raises(sagemaker.exceptions.ClientError) as no_endpoint:
        sagemaker.update_endpoint(EndpointName="no-such-endpoint", EndpointConfigName="ep-missing-config")

    assert "Could not find endpoint configuration" in no_config.value.response["Error"]["Message"]
    assert "Could not find endpoint" in no_endpoint.value.response["Error"]["Message"]
    assert sagemaker.describe_endpoint(EndpointName="ep-missing")["EndpointStatus"] == "InService"


def test_weight_updates_change_only_what_they_name(sagemaker):
    _endpoint(sagemaker, "ep-weights", _variant("main", "iris-v1", 1, count=3), _variant("canary", "iris-v2", 0))

    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="ep-weights",
        DesiredWeightsAndCapacities=[
            {"VariantName": "main", "DesiredWeight": 75},
            {"VariantName": "canary", "DesiredWeight": 25},
        ],
    )
    during = _shown(sagemaker, "ep-weights")
    _wait_in_service(sagemaker, "ep-weights")
    shifted = _shown(sagemaker, "ep-weights")
    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="ep-weights", DesiredWeightsAndCapacities=[{"VariantName": "canary", "DesiredInstanceCount": 2}]
    )
    _wait_in_service(sagemaker, "ep-weights")
    scaled = _shown(sagemaker, "ep-weights")

    # Desired at once, current once InService; instance counts survive a weights-only call (moto blanks them).
    assert (during["canary"]["DesiredWeight"], during["canary"]["CurrentWeight"]) == (25.0, 0.0)
    assert (shifted["main"]["CurrentWeight"], shifted["canary"]["CurrentWeight"]) == (75.0, 25.0)
    assert shifted["main"]["CurrentInstanceCount"] == shifted["main"]["DesiredInstanceCount"] == 3
    assert scaled["canary"]["CurrentInstanceCount"] == 2
    assert scaled["canary"]["CurrentWeight"] == 25.0
    assert scaled["main"] == shifted["main"]


def test_weight_update_naming_an_unknown_variant_or_nothing_is_refused(sagemaker):
    _endpoint(sagemaker, "ep-bad-weights", _variant("main", "iris-v1", 1))

    for entries in ([{"VariantName": "other", "DesiredWeight": 1}], [{"VariantName": "main"}]):
        with pytest.raises(sagemaker.exceptions.ClientError) as caught:
            sagemaker.update_endpoint_weights_and_capacities(
                EndpointName="ep-bad-weights", DesiredWeightsAndCapacities=entries
            )
        assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert sagemaker.describe_endpoint(EndpointName="ep-bad-weights")["EndpointStatus"] == "InService"


def test_application_auto_scaling_stores_the_promotion_s_target_and_policy(moto):
    autoscaling = _client("application-autoscaling", moto.url)
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/ep-scaled/variant/canary",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    autoscaling.register_scalable_target(**target, MinCapacity=1, MaxCapacity=4)
    autoscaling.put_scaling_policy(
        PolicyName="sluice-invocations",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 500.0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": 300,
            "ScaleOutCooldown": 60,
        },
        **target,
    )
    [policy] = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=target["ResourceId"])[
        "ScalingPolicies"
    ]
    autoscaling.delete_scaling_policy(PolicyName="sluice-invocations", **target)
    autoscaling.deregister_scalable_target(**target)

    configuration = policy["TargetTrackingScalingPolicyConfiguration"]
    assert configuration["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert (configuration["TargetValue"], configuration["ScaleInCooldown"], configuration["ScaleOutCooldown"]) == (
        500.0,
        300,
        60,
    )
    assert autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


# --- routing by the live weights -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runtime(moto, sagemaker, models, tmp_path_factory) -> Iterator[Any]:
    trained = TrainedModels(moto.url, "us-east-1", tmp_path_factory.mktemp("trained"))
    lookup = ModelLookup(sagemaker, {version: model.url for version, model in models.items()}, trained)
    server = LocalSageMakerRuntime(lookup.variants, rng=random.Random(7))
    server.start()
    yield _client("sagemaker-runtime", server.url)
    server.stop()
    trained.stop()


def _served(runtime: Any, endpoint: str, calls: int, **params: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(calls):
        response = runtime.invoke_endpoint(
            EndpointName=endpoint,
            Body=json.dumps({"instances": [SETOSA]}),
            ContentType="application/json",
            **params,
        )
        answer = json.loads(response["Body"].read())
        assert answer["model_version"] in ("v1", "v2")
        seen[response["InvokedProductionVariant"]] += 1
    return seen


def test_the_runtime_routes_by_the_live_weights_not_the_config(sagemaker, runtime):
    _endpoint(sagemaker, "ep-route", _variant("main", "iris-v1", 1), _variant("canary", "iris-v2", 0))

    before = _served(runtime, "ep-route", 20)
    pinned = _served(runtime, "ep-route", 3, TargetVariant="canary")
    sagemaker.update_endpoint_weights_and_capacities(
        EndpointName="ep-route",
        DesiredWeightsAndCapacities=[
            {"VariantName": "main", "DesiredWeight": 0},
            {"VariantName": "canary", "DesiredWeight": 100},
        ],
    )
    _wait_in_service(sagemaker, "ep-route")
    after = _served(runtime, "ep-route", 20)

    assert before == {"main": 20}
    assert pinned == {"canary": 3}
    assert after == {"canary": 20}
