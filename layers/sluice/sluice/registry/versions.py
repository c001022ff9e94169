"""GET /v1/registry/{group}, POST /v1/registry/{group}/versions/{version}/approve|reject (operators).

The training workflow approves or rejects each version it registers by its metric threshold; an
operator can overrule it here, with a reason. The decision is SageMaker's own ModelApprovalStatus
(what a deployment reads), with ApprovalDescription "<Approved|Rejected> by <operator>: <reason>"
and the operator in CustomerMetadataProperties (`sluice:decided-by`), plus an audit log line.
SageMaker has no conditional update: of two operators deciding one version at once, the later wins,
and both decisions are in the audit log.
"""

from __future__ import annotations

from typing import Literal

from botocore.exceptions import ClientError

from sluice import clients
from sluice.auth.roles import require_operator
from sluice.errors import VersionAlreadyDecided
from sluice.providers.errors import from_client_error
from sluice.registry.metadata import DECIDED_BY
from sluice.registry.models import ApprovalStatus, RegistryVersion, RegistryVersionList, VersionDecisionRequest
from sluice.registry.packages import (
    approval_status,
    check_group,
    describe,
    find_version,
    registry_version,
    version_summaries,
)
from sluice.request.context import RequestContext
from sluice.request.validation import parse_json_body, validation_failed
from sluice.telemetry import logger

LIST_ROUTE = "GET /v1/registry/{group}"
# The newest versions listed (as GET /v1/approvals lists at most 100): each costs a DescribeModelPackage.
MAX_LISTED = 100
# SageMaker's limits: ApprovalDescription 1024 characters, a CustomerMetadataProperties value 256.
_DESCRIPTION_CHARS = 1024
_PROPERTY_CHARS = 256

Decision = Literal["approve", "reject"]
_STATUS: dict[Decision, ApprovalStatus] = {"approve": "Approved", "reject": "Rejected"}


def decision_route(decision: Decision) -> str:
    return f"POST /v1/registry/{{group}}/versions/{{version}}/{decision}"


def list_versions(ctx: RequestContext, group: str) -> RegistryVersionList:
    require_operator(ctx, LIST_ROUTE)
    check_group(group)
    newest = []
    for summary in version_summaries(group):
        newest.append(summary)
        if len(newest) == MAX_LISTED:
            break
    versions = [registry_version(describe(summary["ModelPackageArn"])) for summary in newest]
    # Version numbers grow with each registration: the surest "newest first", whatever the clock said.
    versions.sort(key=lambda item: item.version, reverse=True)
    return RegistryVersionList(group=group, versions=versions)


def decide_version(ctx: RequestContext, group: str, version: str, decision: Decision, body: bytes) -> RegistryVersion:
    require_operator(ctx, decision_route(decision))
    number = version_number(version)
    # An empty body is a missing reason, named as such.
    request = parse_json_body(VersionDecisionRequest, body if body.strip() else b"{}")
    reason = request.reason.strip()
    if not reason:
        raise validation_failed([{"field": "body.reason", "message": "must not be blank: say why"}])
    package = find_version(group, number)
    current = approval_status(package)
    status = _STATUS[decision]
    if current == status:
        raise VersionAlreadyDecided(
            f"Version {number} of '{group}' is already {current}. "
            f"{'Reject' if status == 'Approved' else 'Approve'} it to change its status.",
            param="version",
            details={"status": current},
        )
    operator = ctx.caller.identity
    arn = package["ModelPackageArn"]
    # UpdateModelPackage without CustomerMetadataProperties would drop them (moto) or keep them (AWS):
    # sending them back keeps the version's metrics and provenance either way.
    properties = {**(package.get("CustomerMetadataProperties") or {}), DECIDED_BY: operator[:_PROPERTY_CHARS]}
    try:
        clients.get("sagemaker").update_model_package(
            ModelPackageArn=arn,
            ModelApprovalStatus=status,
            ApprovalDescription=f"{status} by {operator}: {reason}"[:_DESCRIPTION_CHARS],
            CustomerMetadataProperties=properties,
        )
    except ClientError as exc:
        raise from_client_error("sagemaker", exc) from exc
    # The audit trail of a release decision: who let which model version be deployed (or not), and why.
    logger.info(
        "registry version decided",
        extra={
            "audit": "registry",
            "who": operator,
            "group": group,
            "version": number,
            "model_package_arn": arn,
            "from_status": current,
            "to_status": status,
            "reason": reason,
            "request_id": ctx.request_id,
        },
    )
    return registry_version(describe(arn))


def version_number(version: str) -> int:
    """The path's version: a positive integer (SageMaker numbers a group's versions from 1)."""
    if version.isascii() and version.isdigit() and int(version) >= 1 and len(version) <= 10:
        return int(version)
    raise validation_failed(
        [{"field": "path.version", "message": f"must be a positive integer, like 1 or 12 (got {version[:40]!r})"}]
    )
