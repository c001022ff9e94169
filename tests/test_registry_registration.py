"""Registering a trained model: the threshold gate, the version's contents, and one version per run."""

from __future__ import annotations

import json

import pytest

from sluice.registry.models import RegistrationRequest
from sluice.registry.registration import gate, register_version
from tests.conftest import shared_client

BUCKET = "sluice-test-data"


def request(**overrides) -> RegistrationRequest:
    fields = {
        "job_id": "job-train-1",
        "caller": "platform",
        "trainer": "iris",
        "training_job_name": "job-train-1-2",
        "group": "iris",
        "metric": "validation:accuracy",
        "threshold": 0.9,
        "metrics": {"validation:accuracy": 0.967, "train:loss": 0.21},
        "model_artifact": f"s3://{BUCKET}/training-output/platform/job-train-1/job-train-1-2/output/model.tar.gz",
        "inference_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1",
        "output_uri": f"s3://{BUCKET}/training-output/platform/job-train-1/",
    }
    return RegistrationRequest(**{**fields, **overrides})


@pytest.fixture
def registry(aws):
    shared_client("s3").create_bucket(Bucket=BUCKET)
    return shared_client("sagemaker"), shared_client("s3")


@pytest.mark.parametrize(
    ("metrics", "threshold", "higher", "status", "words"),
    [
        ({"validation:accuracy": 0.95}, 0.9, True, "Approved", "validation:accuracy 0.95 >= threshold 0.9"),
        ({"validation:accuracy": 0.9}, 0.9, True, "Approved", ">= threshold 0.9"),
        ({"validation:accuracy": 0.95}, 0.999, True, "Rejected", "0.95 is below threshold 0.999"),
        ({"validation:accuracy": 0.2}, 0.3, False, "Approved", "0.2 <= threshold 0.3"),
        ({"validation:accuracy": 0.4}, 0.3, False, "Rejected", "0.4 is above threshold 0.3"),
        ({"train:loss": 0.1}, 0.9, True, "Rejected", "validation:accuracy was not reported by the run"),
    ],
)
def test_the_gate_approves_only_a_metric_that_passes_its_threshold(metrics, threshold, higher, status, words):
    decided, reason = gate(request(metrics=metrics, threshold=threshold, higher_is_better=higher))
    assert decided == status
    assert words in reason


def test_a_passing_run_registers_an_approved_version_in_a_new_group(registry):
    sagemaker, s3 = registry
    ref = register_version(sagemaker, s3, request())

    assert (ref.group, ref.version, ref.approval_status) == ("iris", 1, "Approved")
    described = sagemaker.describe_model_package(ModelPackageName=ref.arn)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "validation:accuracy 0.967 >= threshold 0.9"
    container = described["InferenceSpecification"]["Containers"][0]
    assert container["ModelDataUrl"].endswith("/job-train-1-2/output/model.tar.gz")
    assert container["Image"].endswith("/iris:1")
    properties = described["CustomerMetadataProperties"]
    assert properties["sluice:job-id"] == "job-train-1"
    assert properties["sluice:training-job"] == "job-train-1-2"
    assert float(properties["metric:validation:accuracy"]) == pytest.approx(0.967)
    # ModelMetrics points at the statistics document written next to the run's output.
    statistics = described["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert statistics == f"s3://{BUCKET}/training-output/platform/job-train-1/metrics.json"
    document = json.loads(s3.get_object(Bucket=BUCKET, Key=statistics.split("/", 3)[3])["Body"].read())
    assert document["metrics"]["validation:accuracy"] == {"value": 0.967}


def test_a_run_below_the_threshold_registers_a_rejected_version_saying_why(registry):
    sagemaker, s3 = registry
    ref = register_version(sagemaker, s3, request(threshold=0.999))
    assert ref.approval_status == "Rejected"
    assert ref.reason == "validation:accuracy 0.967 is below threshold 0.999"
    assert sagemaker.describe_model_package(ModelPackageName=ref.arn)["ModelApprovalStatus"] == "Rejected"


def test_a_retried_step_returns_the_runs_version_instead_of_adding_one(registry):
    sagemaker, s3 = registry
    first = register_version(sagemaker, s3, request())
    again = register_version(sagemaker, s3, request())
    other = register_version(sagemaker, s3, request(job_id="job-train-2", training_job_name="job-train-2-1"))

    assert again == first
    assert other.version == 2
    listed = sagemaker.list_model_packages(ModelPackageGroupName="iris")["ModelPackageSummaryList"]
    assert len(listed) == 2
