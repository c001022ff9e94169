"""GET /v1/registry/{group}, POST /v1/registry/{group}/versions/{version}/approve|reject (operators).

Model package versions are created in moto as the training workflow registers them: a group, then a
version with its inference container, ModelMetrics, approval status and the sluice:* / metric:*
CustomerMetadataProperties.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest

from tests.api_support import assert_error, body_of, call, event, set_header
from tests.conftest import shared_client
from tests.jobs_support import as_consumer, for_path_id

GROUP = "iris"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1"
OUTPUT = "s3://sluice-test-data/training-output/platform"


def register(
    group: str, job_id: str, *, status: str, accuracy: float, description: str, training_job: str | None = None
) -> str:
    """One model package version, as the training workflow's "Register model version" step leaves it."""
    sagemaker = shared_client("sagemaker")
    if not any(
        item["ModelPackageGroupName"] == group
        for item in sagemaker.list_model_package_groups()["ModelPackageGroupSummaryList"]
    ):
        sagemaker.create_model_package_group(ModelPackageGroupName=group)
    training_job = training_job or f"{job_id}-1"
    artifact = f"{OUTPUT}/{job_id}/{training_job}/output/model.tar.gz"
    properties = {
        "sluice:job-id": job_id,
        "sluice:training-job": training_job,
        "sluice:trainer": "iris",
        "sluice:model-artifact": artifact,
        "metric:validation:accuracy": str(accuracy),
        "metric:train:loss": "0.125",
        "metric:sluice:checkpoint_step": "40",
    }
    arn = sagemaker.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": artifact}],
            "SupportedContentTypes": ["text/csv", "application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": f"{OUTPUT}/{job_id}/metrics.json"}
            }
        },
        ModelApprovalStatus=status,
        CustomerMetadataProperties=properties,
    )["ModelPackageArn"]
    if status != "PendingManualApproval":
        sagemaker.update_model_package(
            ModelPackageArn=arn,
            ModelApprovalStatus=status,
            ApprovalDescription=description,
            CustomerMetadataProperties=properties,
        )
    return arn


@pytest.fixture
def registry(aws) -> dict[int, str]:
    """Group iris: v1 Rejected by its threshold, v2 Approved, v3 waiting for a person."""
    return {
        1: register(
            GROUP,
            "job-11111111111111111111111111111111",
            status="Rejected",
            accuracy=0.6,
            description="validation:accuracy 0.6 below threshold 0.9",
        ),
        2: register(
            GROUP,
            "job-22222222222222222222222222222222",
            status="Approved",
            accuracy=0.967,
            description="validation:accuracy 0.967 >= threshold 0.9",
            training_job="job-22222222222222222222222222222222-2",
        ),
        3: register(
            GROUP, "job-33333333333333333333333333333333", status="PendingManualApproval", accuracy=0.95, description=""
        ),
    }


def package(arn: str) -> dict[str, Any]:
    return shared_client("sagemaker").describe_model_package(ModelPackageName=arn)


def decision_event(decision: str, version: Any = 2, body: Any = "default", group: str = GROUP) -> dict:
    evt = event(f"registry-version-{decision}")
    evt["pathParameters"] = {"group": group, "version": str(version)}
    evt["path"] = f"/v1/registry/{group}/versions/{version}/{decision}"
    evt["requestContext"]["path"] = f"/v1{evt['path']}"
    if body != "default":
        evt["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
        set_header(evt, "Content-Length", str(len((evt["body"] or "").encode())))
    return evt


def audit_lines(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "audit", None) == "registry"]


# ---------------------------------------------------------------------- listing
def test_an_operator_lists_a_groups_versions_newest_first(registry, lambda_context):
    response = call(event("registry-versions-list"), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    listing = body_of(response)
    assert listing["group"] == GROUP
    versions = listing["versions"]
    assert [item["version"] for item in versions] == [3, 2, 1]
    assert [item["approval_status"] for item in versions] == ["PendingManualApproval", "Approved", "Rejected"]
    approved = versions[1]
    assert approved["model_package_arn"] == registry[2]
    assert approved["metrics"] == {"validation:accuracy": 0.967, "train:loss": 0.125, "sluice:checkpoint_step": 40.0}
    assert approved["approval_description"] == "validation:accuracy 0.967 >= threshold 0.9"
    assert approved["job_id"] == "job-22222222222222222222222222222222"
    assert approved["training_job_name"] == "job-22222222222222222222222222222222-2"
    assert approved["model_artifact"] == (
        f"{OUTPUT}/job-22222222222222222222222222222222/job-22222222222222222222222222222222-2/output/model.tar.gz"
    )
    assert datetime.fromisoformat(approved["created"]).tzinfo is not None
    assert set(approved) == {
        "version",
        "model_package_arn",
        "metrics",
        "approval_status",
        "approval_description",
        "created",
        "job_id",
        "training_job_name",
        "model_artifact",
    }


def test_a_group_without_versions_lists_none(aws, lambda_context):
    shared_client("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)

    response = call(event("registry-versions-list"), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert body_of(response) == {"group": GROUP, "versions": []}


def test_a_metric_property_that_is_not_a_number_is_left_out(aws, lambda_context):
    arn = register(GROUP, "job-44444444444444444444444444444444", status="Approved", accuracy=0.9, description="ok")
    properties = {**package(arn)["CustomerMetadataProperties"], "metric:notes": "looks good"}
    shared_client("sagemaker").update_model_package(
        ModelPackageArn=arn, ModelApprovalStatus="Approved", CustomerMetadataProperties=properties
    )

    (version,) = body_of(call(event("registry-versions-list"), lambda_context))["versions"]

    assert "notes" not in version["metrics"]
    assert version["metrics"]["validation:accuracy"] == 0.9


@pytest.mark.parametrize("group", ["churn", "iris_v2", "x" * 64, "-iris"])
def test_an_unknown_group_is_a_404(registry, lambda_context, group):
    evt = for_path_id(event("registry-versions-list"), "group", group)

    error = assert_error(call(evt, lambda_context), evt, 404, "registry_group_not_found")

    assert error["param"] == "group"
    assert group in error["message"]


# ---------------------------------------------------------------------- deciding
def test_an_operator_rejects_an_approved_version_with_a_reason(registry, lambda_context, caplog):
    before = package(registry[2])["CustomerMetadataProperties"]

    with caplog.at_level(logging.INFO):
        response = call(decision_event("reject", 2), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    version = body_of(response)
    reason = "Trained on the mislabelled October export, see ML-479"
    assert (version["version"], version["approval_status"]) == (2, "Rejected")
    assert version["approval_description"] == f"Rejected by platform: {reason}"
    # The version keeps its metrics and provenance (moto would wipe them if they were not sent back).
    assert version["metrics"]["validation:accuracy"] == 0.967
    assert version["job_id"] == "job-22222222222222222222222222222222"
    stored = package(registry[2])
    assert stored["ModelApprovalStatus"] == "Rejected"
    assert stored["ApprovalDescription"] == f"Rejected by platform: {reason}"
    assert stored["CustomerMetadataProperties"] == {**before, "sluice:decided-by": "platform"}
    (line,) = audit_lines(caplog)
    assert line.getMessage() == "registry version decided"
    assert (line.who, line.group, line.version) == ("platform", GROUP, 2)
    assert (line.from_status, line.to_status, line.reason) == ("Approved", "Rejected", reason)
    assert line.model_package_arn == registry[2]


@pytest.mark.parametrize(("version", "before"), [(1, "Rejected"), (3, "PendingManualApproval")])
def test_an_operator_approves_a_rejected_or_waiting_version(registry, lambda_context, caplog, version, before):
    with caplog.at_level(logging.INFO):
        response = call(decision_event("approve", version), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    answer = body_of(response)
    assert answer["approval_status"] == "Approved"
    assert answer["approval_description"] == (
        "Approved by platform: Shadow test on November traffic matched v1, ticket ML-481"
    )
    assert package(registry[version])["ModelApprovalStatus"] == "Approved"
    (line,) = audit_lines(caplog)
    assert (line.version, line.from_status, line.to_status) == (version, before, "Approved")
    # The other versions are untouched.
    statuses = {item["version"]: item["approval_status"] for item in list_versions(lambda_context)}
    assert statuses == {1: "Rejected", 2: "Approved", 3: "PendingManualApproval", version: "Approved"}


def list_versions(lambda_context) -> list[dict[str, Any]]:
    return body_of(call(event("registry-versions-list"), lambda_context))["versions"]


@pytest.mark.parametrize(("decision", "version", "status"), [("approve", 2, "Approved"), ("reject", 1, "Rejected")])
def test_deciding_what_a_version_already_is_is_a_409_that_changes_nothing(
    registry, lambda_context, caplog, decision, version, status
):
    before = package(registry[version])
    evt = decision_event(decision, version)

    error = assert_error(call(evt, lambda_context), evt, 409, "version_already_decided")

    assert error["details"] == {"status": status}
    assert f"already {status}" in error["message"]
    after = package(registry[version])
    assert after["ApprovalDescription"] == before["ApprovalDescription"]
    assert after["CustomerMetadataProperties"] == before["CustomerMetadataProperties"]
    assert audit_lines(caplog) == []


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_unknown_version_is_a_404(registry, lambda_context, decision):
    evt = decision_event(decision, 4)

    error = assert_error(call(evt, lambda_context), evt, 404, "registry_version_not_found")

    assert error["param"] == "version"
    assert "has no version 4" in error["message"]


def test_a_version_of_an_unknown_group_is_a_404_naming_the_group(registry, lambda_context):
    evt = decision_event("approve", 1, group="churn")

    error = assert_error(call(evt, lambda_context), evt, 404, "registry_group_not_found")

    assert error["param"] == "group"


@pytest.mark.parametrize("version", ["0", "-1", "1.5", "two", "99999999999", "²"])
def test_a_version_that_is_not_a_positive_integer_is_a_422(registry, lambda_context, version):
    evt = decision_event("approve", version)

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "path.version"
    assert "positive integer" in error["message"]


@pytest.mark.parametrize("body", [None, "", "{}", {"reason": ""}, {"reason": "   "}, {"why": "x"}])
def test_a_decision_without_a_reason_is_a_422_naming_body_reason(registry, lambda_context, body):
    evt = decision_event("reject", 2, body)

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert "body.reason" in {item["field"] for item in error["details"]}
    assert package(registry[2])["ModelApprovalStatus"] == "Approved"


# ---------------------------------------------------------------------- consumers
@pytest.mark.parametrize(
    ("name", "route"),
    [
        ("registry-versions-list", "GET /v1/registry/{group}"),
        ("registry-version-approve", "POST /v1/registry/{group}/versions/{version}/approve"),
        ("registry-version-reject", "POST /v1/registry/{group}/versions/{version}/reject"),
    ],
)
def test_a_consumer_cannot_list_or_decide_versions(registry, lambda_context, caplog, name, route):
    before = {number: package(arn)["ModelApprovalStatus"] for number, arn in registry.items()}
    evt = as_consumer(event(name))

    error = assert_error(call(evt, lambda_context), evt, 403, "operator_required", "permission_error")

    assert f"{route} needs an operator" in error["message"]
    assert error["details"] == {"route": route, "role": "consumer"}
    assert {number: package(arn)["ModelApprovalStatus"] for number, arn in registry.items()} == before
    assert audit_lines(caplog) == []


def test_the_sample_events_are_an_operators():
    for name in ("registry-versions-list", "registry-version-approve", "registry-version-reject"):
        assert event(name)["requestContext"]["authorizer"]["role"] == "operator", name
