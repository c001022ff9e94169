"""Reading the registry: a group's model package versions from SageMaker, as RegistryVersion.

What Sluice knows about a version beyond SageMaker's own fields lives in its CustomerMetadataProperties,
written by the training workflow when it registers the version: `sluice:job-id`, `sluice:training-job`,
`sluice:trainer`, `sluice:model-artifact`, and one `metric:<name>` per final metric of the run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.errors import RegistryGroupNotFound, RegistryVersionNotFound
from sluice.providers.errors import from_client_error
from sluice.registry.metadata import JOB_ID, METRIC_PREFIX, MODEL_ARTIFACT, TRAINING_JOB
from sluice.registry.models import GROUP_PATTERN, RegistryVersion

# What SageMaker gives a version registered without a status.
DEFAULT_STATUS = "PendingManualApproval"
# ListModelPackages' page size ceiling.
_PAGE = 100
_GROUP = re.compile(GROUP_PATTERN)


def check_group(group: str) -> None:
    """404 for a group that does not exist, or whose name no group could have (never sent to SageMaker)."""
    if not _GROUP.fullmatch(group):
        raise _no_group(group)
    try:
        clients.get("sagemaker").describe_model_package_group(ModelPackageGroupName=group)
    except ClientError as exc:
        if _does_not_exist(exc):
            raise _no_group(group) from None
        raise from_client_error("sagemaker", exc) from exc


def version_summaries(group: str) -> Iterator[dict[str, Any]]:
    """The group's versions as ListModelPackages pages them, newest first."""
    sagemaker = clients.get("sagemaker")
    params: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
        "MaxResults": _PAGE,
    }
    while True:
        try:
            page = sagemaker.list_model_packages(**params)
        except ClientError as exc:
            raise from_client_error("sagemaker", exc) from exc
        yield from page.get("ModelPackageSummaryList", [])
        if not page.get("NextToken"):
            return
        params["NextToken"] = page["NextToken"]


def describe(model_package_arn: str) -> dict[str, Any]:
    try:
        return clients.get("sagemaker").describe_model_package(ModelPackageName=model_package_arn)
    except ClientError as exc:
        raise from_client_error("sagemaker", exc) from exc


def find_version(group: str, version: int) -> dict[str, Any]:
    """DescribeModelPackage of version `version` of `group` (versioned packages are named by ARN only)."""
    check_group(group)
    for summary in version_summaries(group):
        if summary.get("ModelPackageVersion") == version:
            return describe(summary["ModelPackageArn"])
    raise RegistryVersionNotFound(
        f"Model package group '{group}' has no version {version}. GET /v1/registry/{group} lists its versions.",
        param="version",
    )


def registry_version(package: dict[str, Any]) -> RegistryVersion:
    """A DescribeModelPackage answer as the API shows it."""
    properties: dict[str, str] = package.get("CustomerMetadataProperties") or {}
    created = package.get("CreationTime")
    return RegistryVersion(
        version=package["ModelPackageVersion"],
        model_package_arn=package["ModelPackageArn"],
        metrics=metrics_of(properties),
        approval_status=approval_status(package),
        approval_description=package.get("ApprovalDescription"),
        created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
        job_id=properties.get(JOB_ID),
        training_job_name=properties.get(TRAINING_JOB),
        model_artifact=properties.get(MODEL_ARTIFACT),
    )


def approval_status(package: dict[str, Any]) -> str:
    return package.get("ModelApprovalStatus") or DEFAULT_STATUS


def metrics_of(properties: dict[str, str]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in properties.items():
        if not key.startswith(METRIC_PREFIX):
            continue
        try:
            metrics[key[len(METRIC_PREFIX) :]] = float(value)
        except ValueError:
            # Written by someone else than the workflow: not a metric the API can show as a number.
            continue
    return metrics


def _does_not_exist(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return error.get("Code") in {"ValidationException", "ResourceNotFound"} and "does not exist" in error.get(
        "Message", ""
    )


def _no_group(group: str) -> RegistryGroupNotFound:
    return RegistryGroupNotFound(
        f"Model package group '{group}' does not exist. A training run with a \"register\" section creates it.",
        param="group",
    )
