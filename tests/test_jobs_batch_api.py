"""POST /v1/batch-jobs: a validated request becomes a job and a batch transform execution."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.jobs.kinds.batch_transform.models import S3_LOCATION_PATTERN, BatchExecutionInput, BatchJobRequest
from sluice.jobs.models import JobStatus
from sluice.settings import get_settings
from tests.api_support import assert_error, body_of, call, event, header, set_header
from tests.jobs_support import DATA_BUCKET, IRIS_MODEL_NAME, as_caller, create_jobs_stack, set_setting

INPUT = f"s3://{DATA_BUCKET}/uploads/acme/scoring-2026-11/"  # as in events/api/batch-job-create.json


@pytest.fixture
def jobs(aws, catalog_document, monkeypatch):
    stack = create_jobs_stack(monkeypatch, catalog_document)
    stack.put("uploads/acme/scoring-2026-11/part-0001.csv")
    stack.put("uploads/acme/scoring-2026-11/part-0002.csv")
    yield stack
    monkeypatch.undo()
    get_settings.cache_clear()


def batch_request(**changes) -> dict:
    evt = event("batch-job-create")
    body = json.loads(evt["body"])
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return event("batch-job-create", body=body)


def test_a_batch_job_is_created_and_its_execution_started(jobs, lambda_context):
    evt = event("batch-job-create")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    assert job["kind"] == "batch"
    assert job["model"] == "iris"
    assert job["status"] == "QUEUED"
    assert job["input_location"] == INPUT
    assert job["output_location"] == f"s3://{DATA_BUCKET}/batch-output/acme/{job['id']}/"
    assert header(response, "Location") == f"/v1/jobs/{job['id']}"
    (execution,) = jobs.executions(jobs.batch_arn)
    assert execution["name"] == job["id"]
    raw = jobs.execution_input(execution["executionArn"])
    # Every field is present, nulls included: the state machine's paths expect them all.
    assert set(raw) == set(BatchExecutionInput.model_fields)
    sent = BatchExecutionInput.model_validate(raw)
    assert sent.job_id == job["id"]
    assert sent.caller == "acme"
    assert sent.model_name == IRIS_MODEL_NAME
    assert (sent.input_bucket, sent.input_prefix) == (DATA_BUCKET, "uploads/acme/scoring-2026-11/")
    assert (sent.output_bucket, sent.output_prefix) == (DATA_BUCKET, f"batch-output/acme/{job['id']}/")
    assert sent.content_type == "text/csv"
    assert sent.split_type == "Line"
    assert (sent.instance_type, sent.instance_count) == ("ml.m5.xlarge", 2)
    assert sent.join_with_input is True
    assert jobs.store.get(job["id"]).execution_id == execution["executionArn"]


def test_defaults_fill_in_what_the_request_leaves_out(jobs, lambda_context):
    evt = event("batch-job-create", body={"model": "churn-batch", "input_prefix": INPUT})

    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    (execution,) = jobs.executions(jobs.batch_arn)
    sent = BatchExecutionInput.model_validate(jobs.execution_input(execution["executionArn"]))
    settings = get_settings()
    assert sent.model_name == "churn-v3"
    assert sent.content_type == settings.batch_content_types[0]
    assert sent.instance_type == settings.batch_default_instance_type
    assert sent.instance_count == 1
    assert sent.max_payload_mb == 6


def test_an_output_prefix_of_ones_own_is_used(jobs, lambda_context):
    output = f"s3://{DATA_BUCKET}/batch-output/acme/nightly/2026-11-23/"

    response = call(batch_request(output_prefix=output), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    assert body_of(response)["output_location"] == output


def test_a_self_attested_approved_by_no_longer_starts_ten_p4d_instances(jobs, lambda_context):
    evt = batch_request(instance_type="ml.p4d.24xlarge", instance_count=10, approved_by="cfo@example.com")

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body.approved_by"
    assert "cannot approve its own instance type" in error["message"]
    assert jobs.all_jobs() == []
    assert jobs.executions(jobs.batch_arn) == []


def test_a_large_instance_is_accepted_but_waits_for_an_operator(jobs, lambda_context):
    response = call(batch_request(instance_type="ml.p4d.24xlarge", instance_count=10), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    assert job["status"] == "AWAITING_APPROVAL"
    assert job["links"]["cancel"] == f"/v1/jobs/{job['id']}/cancel"
    assert jobs.store.get(job["id"]).status == JobStatus.AWAITING_APPROVAL
    # The workflow is started: its first steps ask an operator (statemachines/batch_transform).
    (execution,) = jobs.executions(jobs.batch_arn)
    sent = jobs.execution_input(execution["executionArn"])
    assert (sent["instance_type"], sent["instance_count"]) == ("ml.p4d.24xlarge", 10)
    assert "approved_by" not in sent
    listing = event("jobs-list")
    listing["queryStringParameters"] = listing["multiValueQueryStringParameters"] = None
    listed = body_of(call(listing, lambda_context))
    assert [(item["id"], item["status"]) for item in listed["data"]] == [(job["id"], "AWAITING_APPROVAL")]


def test_an_approval_free_instance_is_queued_as_before(jobs, lambda_context):
    response = call(batch_request(instance_type="ml.g4dn.xlarge"), lambda_context)

    assert body_of(response)["status"] == "QUEUED"


def test_the_same_idempotency_key_twice_starts_one_batch_job(jobs, lambda_context):
    first = call(event("batch-job-create"), lambda_context)
    second = call(event("batch-job-create"), lambda_context)

    assert body_of(first)["id"] == body_of(second)["id"]
    assert header(second, "Idempotent-Replayed") == "true"
    assert len(jobs.executions(jobs.batch_arn)) == 1
    assert len(jobs.all_jobs()) == 1


def test_the_same_key_with_another_request_is_a_clear_422(jobs, lambda_context):
    call(event("batch-job-create"), lambda_context)
    evt = batch_request(instance_count=3)

    error = assert_error(call(evt, lambda_context), evt, 422, "idempotency_key_reused")

    assert error["param"] == "Idempotency-Key"
    assert len(jobs.executions(jobs.batch_arn)) == 1


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "code", "param", "words"),
    [
        ({"input_prefix": None}, 422, "validation_failed", "body.input_prefix", "Field required"),
        ({"input_prefix": "uploads/acme/x/"}, 422, "validation_failed", "body.input_prefix", "s3://"),
        (
            {"input_prefix": f"s3://{DATA_BUCKET}/uploads/acme/nothing-here/"},
            422,
            "validation_failed",
            "body.input_prefix",
            "input prefix is empty",
        ),
        ({"content_type": "image/png"}, 422, "validation_failed", "body.content_type", "not supported for batch"),
        ({"instance_count": 0}, 422, "validation_failed", "body.instance_count", "greater than or equal to 1"),
        ({"instance_count": 11}, 422, "validation_failed", "body.instance_count", "at most 10"),
        ({"instance_type": "p3.2xlarge"}, 422, "validation_failed", "body.instance_type", "pattern"),
        ({"approved_by": "me"}, 422, "validation_failed", "body.approved_by", "is not accepted"),
        ({"model": "claude-chat"}, 400, "invalid_request", "model", "SageMaker models only"),
        ({"model": "mme-churn"}, 400, "invalid_request", "model", "backend.model_name"),
        ({"model": "nope"}, 404, "model_not_found", "model", "does not exist"),
        ({"model": "private-model"}, 403, "model_not_allowed", "model", "not available"),
        ({"surprise": 1}, 422, "validation_failed", "body.surprise", "Extra inputs"),
        ({"callback": {"webhook_url": "ftp://x"}}, 422, "validation_failed", "body.callback.webhook_url", "pattern"),
    ],
)
def test_a_bad_batch_request_is_refused_naming_the_field(jobs, lambda_context, changes, status, code, param, words):
    evt = batch_request(**changes)

    error = assert_error(call(evt, lambda_context), evt, status, code)

    assert error["param"] == param
    assert words in error["message"]
    assert jobs.all_jobs() == []
    assert jobs.executions(jobs.batch_arn) == []


def test_a_batch_callback_to_another_tenants_topic_is_a_422_naming_the_field(jobs, lambda_context):
    evt = batch_request(callback={"sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:globex-jobs"})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body.callback.sns_topic_arn"
    assert "not among the callback topics allowed for this caller" in error["message"]
    assert jobs.all_jobs() == []


def test_an_empty_folder_marker_is_not_input(jobs, lambda_context):
    jobs.put("uploads/acme/only-a-folder/", b"")
    evt = batch_request(input_prefix=f"s3://{DATA_BUCKET}/uploads/acme/only-a-folder/")

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert "input prefix is empty" in error["message"]


@pytest.mark.parametrize(
    ("field", "location"),
    [
        ("input_prefix", f"s3://{DATA_BUCKET}/uploads/globex/secrets/"),  # another caller's data
        ("input_prefix", f"s3://{DATA_BUCKET}/uploads/acme"),  # a prefix that also matches acme-corp
        ("input_prefix", f"s3://{DATA_BUCKET}/batch-input/iris/"),  # the platform's drop folder
        ("input_prefix", "s3://somebody-elses-bucket/data/"),
        ("output_prefix", f"s3://{DATA_BUCKET}/batch-output/globex/"),
        ("output_prefix", f"s3://{DATA_BUCKET}/uploads/acme/overwrite-my-input/"),
        ("output_prefix", "s3://somebody-elses-bucket/out/"),
    ],
)
def test_locations_outside_the_callers_own_prefixes_are_403(jobs, lambda_context, field, location):
    evt = batch_request(**{field: location})

    error = assert_error(call(evt, lambda_context), evt, 403, "location_not_allowed")

    assert error["param"] == field
    assert jobs.all_jobs() == []


def test_a_bucket_the_platform_lists_is_open_to_batch_jobs(jobs, lambda_context, monkeypatch):
    from tests.conftest import shared_client

    shared_client("s3").create_bucket(Bucket="acme-shared-datasets")
    jobs.put("census/2026.csv", bucket="acme-shared-datasets")
    set_setting(monkeypatch, "SLUICE_BATCH_EXTRA_BUCKETS", "acme-shared-datasets, other-bucket")

    response = call(batch_request(input_prefix="s3://acme-shared-datasets/census/"), lambda_context)

    assert response["statusCode"] == 202, response["body"]


def test_another_caller_cannot_reuse_a_job_of_acmes_through_an_idempotency_key(jobs, lambda_context):
    first = body_of(call(event("batch-job-create"), lambda_context))
    globex = as_caller(event("batch-job-create"), "globex")

    error = assert_error(call(globex, lambda_context), globex, 403, "location_not_allowed")

    assert error["param"] == "input_prefix"
    assert jobs.store.get(first["id"]).status == JobStatus.QUEUED


def test_without_an_idempotency_key_nothing_is_marked_replayed(jobs, lambda_context):
    evt = copy.deepcopy(event("batch-job-create"))
    set_header(evt, "Idempotency-Key", None)

    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    assert header(response, "Idempotent-Replayed") is None


@settings(max_examples=200, deadline=None)
@given(location=st.from_regex(S3_LOCATION_PATTERN))
def test_a_location_the_schema_allows_is_not_refused_by_a_hidden_rule(location):
    """Generated clients follow the OpenAPI pattern: the model must accept whatever matches it."""
    request = BatchJobRequest(model="iris", input_prefix=location, output_prefix=location)
    assert request.input_prefix == location
    schema = BatchJobRequest.model_json_schema()["properties"]
    assert schema["input_prefix"]["pattern"] == S3_LOCATION_PATTERN
