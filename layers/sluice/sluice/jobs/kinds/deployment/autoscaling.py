"""Autoscaling of a variant (Application Auto Scaling): attached to the new version once it serves 100%,
and taken off any variant an endpoint update is about to remove or change.

SageMaker refuses an UpdateEndpoint that removes or changes a variant with autoscaling attached until its
scaling policies are deleted and its scalable target deregistered; `detach` does both. A boto3 client in
a Lambda, not an aws-sdk task: the state machine's SDK integration has no applicationautoscaling in moto.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sluice.jobs.kinds.deployment.audit import WORKFLOW, audit
from sluice.jobs.kinds.deployment.models import ResolvedAutoscaling

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


class Attached(BaseModel):
    """details.autoscaling: what was attached to the promoted variant."""

    resource_id: str
    min: int
    max: int
    policy_name: str
    target_invocations_per_instance: float
    scale_in_cooldown: int
    scale_out_cooldown: int


def resource_id(endpoint_name: str, variant_name: str) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def policy_name(endpoint_name: str, variant_name: str) -> str:
    return f"sluice-{endpoint_name}-{variant_name}-invocations"[:256]


def is_scaled(autoscaling: Any, endpoint_name: str, variant_name: str) -> bool:
    found = autoscaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=[resource_id(endpoint_name, variant_name)], ScalableDimension=DIMENSION
    )
    return bool(found.get("ScalableTargets"))


def detach(autoscaling: Any, endpoint_name: str, variant_name: str, *, why: str, who: str = WORKFLOW) -> bool:
    """Delete the variant's scaling policies and deregister its target; False when it had none."""
    resource = resource_id(endpoint_name, variant_name)
    if not is_scaled(autoscaling, endpoint_name, variant_name):
        return False
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=resource, ScalableDimension=DIMENSION
    ).get("ScalingPolicies", [])
    for policy in policies:
        autoscaling.delete_scaling_policy(
            PolicyName=policy["PolicyName"],
            ServiceNamespace=NAMESPACE,
            ResourceId=resource,
            ScalableDimension=DIMENSION,
        )
    autoscaling.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=resource, ScalableDimension=DIMENSION)
    audit(
        "autoscaling detached",
        who=who,
        why=why,
        endpoint_name=endpoint_name,
        variant=variant_name,
        policies=[policy["PolicyName"] for policy in policies],
    )
    return True


def attach(autoscaling: Any, endpoint_name: str, variant_name: str, spec: ResolvedAutoscaling) -> Attached:
    """Register the variant's instance count as a scalable target (min..max) and track invocations per
    instance with the cooldowns (DOMAIN.md: scale in after 300 s, out after 60 s)."""
    resource = resource_id(endpoint_name, variant_name)
    autoscaling.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=resource,
        ScalableDimension=DIMENSION,
        MinCapacity=spec.min,
        MaxCapacity=spec.max,
    )
    name = policy_name(endpoint_name, variant_name)
    autoscaling.put_scaling_policy(
        PolicyName=name,
        ServiceNamespace=NAMESPACE,
        ResourceId=resource,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": spec.target_invocations_per_instance,
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": spec.scale_in_cooldown,
            "ScaleOutCooldown": spec.scale_out_cooldown,
        },
    )
    attached = Attached(resource_id=resource, policy_name=name, **spec.model_dump())
    audit(
        "autoscaling attached",
        why="the new version is promoted and serves all traffic",
        endpoint_name=endpoint_name,
        variant=variant_name,
        **attached.model_dump(),
    )
    return attached
