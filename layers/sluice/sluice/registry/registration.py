"""The training workflow's "Register model version": one model package version per successful run.

The gate is decided here, from the run's own metric: a version whose metric passes the threshold is
registered Approved (the canary workflow may deploy it), any other Rejected with the numbers in its
ApprovalDescription, so a model that did not earn its place is kept for inspection but never served.
An operator can still change either decision (sluice.registry.versions), and that change is audited.

A retried step must not add a second version for the same run: SageMaker's CreateModelPackage has a
ClientToken, but a token outlives neither an hour nor every SDK path, so the group's newest versions
are checked for this run's job id first (a retry comes right after the first try, so it is among them).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from sluice.jobs.kinds.training.models import ModelPackageRef
from sluice.registry.metadata import JOB_ID, METRIC_PREFIX, MODEL_ARTIFACT, TRAINER, TRAINING_JOB
from sluice.registry.models import ApprovalStatus, RegistrationRequest
from sluice.storage.keys import parse_s3_uri
from sluice.telemetry import logger

METRICS_DOCUMENT = "metrics.json"
# How many of the group's newest versions a retry looks through for its own.
_RECENT_VERSIONS = 10
_MAX_VALUE_CHARS = 256


class RegistrationFailed(Exception):
    """SageMaker refused the group or the version; the message has its words."""


def gate(request: RegistrationRequest) -> tuple[ApprovalStatus, str]:
    """Approved when the metric passes the threshold (at or above it, or at or below it for a metric
    where lower is better); Rejected otherwise, and when the run never reported the metric."""
    value = request.metrics.get(request.metric)
    if value is None:
        reported = ", ".join(sorted(request.metrics)) or "none"
        return "Rejected", f"{request.metric} was not reported by the run (its metrics: {reported})"
    passes = value >= request.threshold if request.higher_is_better else value <= request.threshold
    relation = (">=" if request.higher_is_better else "<=") if passes else "misses"
    if passes:
        return "Approved", f"{request.metric} {value:g} {relation} threshold {request.threshold:g}"
    side = "below" if request.higher_is_better else "above"
    return "Rejected", f"{request.metric} {value:g} is {side} threshold {request.threshold:g}"


def metadata(request: RegistrationRequest) -> dict[str, str]:
    properties = {
        JOB_ID: request.job_id,
        TRAINING_JOB: request.training_job_name,
        TRAINER: request.trainer,
        MODEL_ARTIFACT: request.model_artifact,
    }
    for name, value in sorted(request.metrics.items()):
        properties[f"{METRIC_PREFIX}{name}"[:128]] = repr(float(value))
    return {key: value[:_MAX_VALUE_CHARS] for key, value in properties.items()}


def register_version(sagemaker: Any, s3: Any, request: RegistrationRequest) -> ModelPackageRef:
    status, reason = gate(request)
    _ensure_group(sagemaker, request)
    existing = _version_of_run(sagemaker, request)
    if existing is not None:
        logger.info("model version already registered for this run", extra={"model_package_arn": existing.arn})
        return existing
    statistics_uri = _write_metrics(s3, request)
    properties = metadata(request)
    try:
        arn = sagemaker.create_model_package(
            ModelPackageGroupName=request.group,
            ModelPackageDescription=f"Trained by Sluice run {request.job_id} ({request.trainer})"[:1024],
            ModelApprovalStatus=status,
            InferenceSpecification={
                "Containers": [{"Image": request.inference_image, "ModelDataUrl": request.model_artifact}],
                "SupportedContentTypes": ["text/csv", "application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": statistics_uri}}},
            CustomerMetadataProperties=properties,
            ClientToken=request.job_id[:36],
        )["ModelPackageArn"]
        # CreateModelPackage takes no ApprovalDescription. The properties are sent again because an
        # update that leaves them out clears them in the embedded AWS (moto), and AWS keeps them either way.
        sagemaker.update_model_package(
            ModelPackageArn=arn,
            ModelApprovalStatus=status,
            ApprovalDescription=reason[:1024],
            CustomerMetadataProperties=properties,
        )
        version = sagemaker.describe_model_package(ModelPackageName=arn)["ModelPackageVersion"]
    except ClientError as exc:
        raise RegistrationFailed(f"SageMaker refused the model version in group {request.group}: {exc}") from None
    logger.info(
        "model version registered",
        extra={
            "audit": "registry",
            "who": "training workflow",
            "group": request.group,
            "version": version,
            "approval_status": status,
            "reason": reason,
            "job_id": request.job_id,
        },
    )
    return ModelPackageRef(arn=arn, group=request.group, version=version, approval_status=status, reason=reason)


def _ensure_group(sagemaker: Any, request: RegistrationRequest) -> None:
    try:
        sagemaker.describe_model_package_group(ModelPackageGroupName=request.group)
        return
    except ClientError as exc:
        if "does not exist" not in exc.response.get("Error", {}).get("Message", ""):
            raise RegistrationFailed(f"Cannot read model package group {request.group}: {exc}") from None
    try:
        sagemaker.create_model_package_group(
            ModelPackageGroupName=request.group,
            ModelPackageGroupDescription=f"Model versions trained by Sluice ({request.trainer})",
        )
    except ClientError as exc:
        # Created meanwhile by another run of the same group: fine.
        if exc.response.get("Error", {}).get("Code") not in ("ResourceInUse", "ResourceInUseException"):
            raise RegistrationFailed(f"Cannot create model package group {request.group}: {exc}") from None


def _version_of_run(sagemaker: Any, request: RegistrationRequest) -> ModelPackageRef | None:
    try:
        page = sagemaker.list_model_packages(
            ModelPackageGroupName=request.group,
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=_RECENT_VERSIONS,
        )
        for summary in page.get("ModelPackageSummaryList", []):
            described = sagemaker.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
            if (described.get("CustomerMetadataProperties") or {}).get(JOB_ID) == request.job_id:
                return ModelPackageRef(
                    arn=described["ModelPackageArn"],
                    group=request.group,
                    version=described["ModelPackageVersion"],
                    approval_status=described["ModelApprovalStatus"],
                    reason=described.get("ApprovalDescription"),
                )
    except ClientError as exc:
        raise RegistrationFailed(f"Cannot list the versions of model package group {request.group}: {exc}") from None
    return None


def _write_metrics(s3: Any, request: RegistrationRequest) -> str:
    """The ModelQuality statistics document SageMaker's ModelMetrics points at."""
    bucket, prefix = parse_s3_uri(request.output_uri)
    key = f"{prefix.rstrip('/')}/{METRICS_DOCUMENT}" if prefix else METRICS_DOCUMENT
    document = {
        "job_id": request.job_id,
        "training_job_name": request.training_job_name,
        "metrics": {name: {"value": value} for name, value in sorted(request.metrics.items())},
        "gate": {
            "metric": request.metric,
            "threshold": request.threshold,
            "higher_is_better": request.higher_is_better,
        },
    }
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(document, indent=2).encode(), ContentType="application/json")
    return f"s3://{bucket}/{key}"
