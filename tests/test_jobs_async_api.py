"""POST /v1/models/{model}/async and its upload step: input in S3 first, then the job, then its work.

The API handler and the domain library run for real against moto (DynamoDB, S3, Step Functions); only
sagemaker-runtime's InvokeEndpointAsync is stubbed (botocore Stubber) to check its exact parameters.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest
from botocore.stub import ANY

from sluice import clients
from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.models import JobStatus
from sluice.settings import get_settings
from tests.api_support import assert_error, body_of, call, event, header, set_header
from tests.conftest import shared_client
from tests.jobs_support import (
    DATA_BUCKET,
    UPLOAD_TICKETS_TABLE,
    as_caller,
    calls_recorded,
    for_model,
    set_setting,
)

IRIS_ROWS = b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'


def submit(lambda_context, *, body: bytes | str | None = IRIS_ROWS, key: str | None = None, **headers: str | None):
    evt = event("async-submit", body=body.decode() if isinstance(body, bytes) else body)
    set_header(evt, "Idempotency-Key", key)
    for name, value in headers.items():
        set_header(evt, name.replace("_", "-"), value)
    return evt, call(evt, lambda_context)


# --- inline input ---------------------------------------------------------------------------------


def test_async_job_writes_the_input_to_s3_then_the_job_then_starts_the_execution(jobs, lambda_context):
    recorded = {
        "s3": clients.get("s3"),
        "dynamodb": clients.get("dynamodb"),
        "stepfunctions": clients.get("stepfunctions"),
    }
    with calls_recorded(recorded) as made:
        _, response = submit(lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    assert job["object"] == "job"
    assert job["kind"] == "async"
    assert job["model"] == "iris"
    assert job["status"] == "QUEUED"
    assert job["id"].startswith("job-")
    assert job["links"] == {"self": f"/v1/jobs/{job['id']}", "cancel": f"/v1/jobs/{job['id']}/cancel"}
    assert header(response, "Location") == f"/v1/jobs/{job['id']}"
    # Order: the input object, then the job row, then the execution (which updates that row).
    writes = [call for call in made if call in ("s3.PutObject", "dynamodb.PutItem", "stepfunctions.StartExecution")]
    assert writes == ["s3.PutObject", "dynamodb.PutItem", "stepfunctions.StartExecution"]
    input_key = f"async/acme/{job['id']}/input"
    assert job["input_location"] == f"s3://{DATA_BUCKET}/{input_key}"
    stored = shared_client("s3").get_object(Bucket=DATA_BUCKET, Key=input_key)
    assert stored["Body"].read() == IRIS_ROWS
    assert stored["ContentType"] == "application/json"
    # The execution is named after the job and its input is the contract the state machine reads.
    (execution,) = jobs.executions(jobs.async_arn)
    assert execution["name"] == job["id"]
    raw = jobs.execution_input(execution["executionArn"])
    # Every field is present, nulls included: the state machine's paths expect them all.
    assert set(raw) == set(AsyncExecutionInput.model_fields)
    sent = AsyncExecutionInput.model_validate(raw)
    assert sent.job_id == job["id"]
    assert sent.caller == "acme"
    assert sent.model == "iris"
    assert (sent.input_bucket, sent.input_key) == (DATA_BUCKET, input_key)
    assert (sent.output_bucket, sent.output_key) == (DATA_BUCKET, f"async/acme/{job['id']}/output")
    assert sent.content_type == "application/json"
    assert jobs.store.get(job["id"]).execution_id == execution["executionArn"]


def test_async_job_for_a_bedrock_model_also_runs_on_the_state_machine(jobs, lambda_context):
    body = {"messages": [{"role": "user", "content": [{"text": "Summarise this."}]}]}
    evt = for_model(event("async-submit", body=body), "claude-chat")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    (execution,) = jobs.executions(jobs.async_arn)
    assert execution["name"] == job["id"]
    assert jobs.execution_input(execution["executionArn"])["model"] == "claude-chat"
    assert jobs.store.get(job["id"]).details["runner"] == "state-machine"


def test_native_async_endpoint_gets_invoke_endpoint_async_with_the_job_id(jobs, stubbed, lambda_context):
    runtime = stubbed("sagemaker-runtime")
    sent: dict = {}
    runtime.client.meta.events.register(
        "before-parameter-build.sagemaker-runtime.InvokeEndpointAsync", lambda params, **_: sent.update(params)
    )
    runtime.add_response(
        "invoke_endpoint_async",
        {
            "InferenceId": "echoed-by-sagemaker",
            "OutputLocation": f"s3://{DATA_BUCKET}/async/_sagemaker/output/abc.out",
            "FailureLocation": f"s3://{DATA_BUCKET}/async/_sagemaker/failure/abc.out",
        },
        expected_params={
            "EndpointName": "sluice-churn-async",
            "InputLocation": ANY,
            "InferenceId": ANY,
            "ContentType": "text/csv",
            "Accept": "application/json",
        },
    )
    evt = for_model(event("async-submit", body="42,1,0.5\n", headers={"Content-Type": "text/csv"}), "churn-async")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job_id = body_of(response)["id"]
    assert sent["InferenceId"] == job_id
    assert sent["InputLocation"] == f"s3://{DATA_BUCKET}/async/acme/{job_id}/input"
    stored = jobs.store.get(job_id)
    assert stored.status == JobStatus.RUNNING
    assert stored.execution_id == job_id
    assert stored.output_location == f"s3://{DATA_BUCKET}/async/_sagemaker/output/abc.out"
    assert stored.details["failure_location"] == f"s3://{DATA_BUCKET}/async/_sagemaker/failure/abc.out"
    assert stored.details["runner"] == "sagemaker-async"
    # What SageMaker's notification must name for it to finish this job.
    assert stored.details["endpoint_name"] == "sluice-churn-async"
    assert jobs.executions(jobs.async_arn) == []  # SageMaker runs it, not the state machine


def test_an_async_endpoint_model_is_refused_on_the_synchronous_route(jobs, lambda_context):
    evt = for_model(event("invoke-sagemaker"), "churn-async")

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert "/v1/models/churn-async/async" in error["message"]
    assert error["param"] == "model"


def test_callback_from_headers_is_recorded_and_sent_to_the_state_machine(jobs, lambda_context):
    topic = "arn:aws:sns:us-east-1:123456789012:acme-jobs"
    _, response = submit(lambda_context, X_Sluice_Callback_Sns=topic)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    assert job["callback"] == {"sns_topic_arn": topic, "webhook_url": None}
    (execution,) = jobs.executions(jobs.async_arn)
    assert jobs.execution_input(execution["executionArn"])["callback"] == {"sns_topic_arn": topic, "webhook_url": None}


def test_a_callback_to_another_tenants_topic_is_a_422_naming_the_header(jobs, lambda_context):
    # globex-jobs is in the stack's ceiling, but acme's own topics are acme-* only.
    evt, response = submit(lambda_context, X_Sluice_Callback_Sns="arn:aws:sns:us-east-1:123456789012:globex-jobs")

    error = assert_error(response, evt, 422, "validation_failed")

    assert error["param"] == "X-Sluice-Callback-Sns"
    assert "not among the callback topics allowed for this caller" in error["message"]
    assert jobs.all_jobs() == []
    assert jobs.keys() == []


def test_callback_may_come_in_the_query_string(jobs, lambda_context):
    evt = event("async-submit")
    evt["queryStringParameters"] = {"callback_url": "https://hooks.example.com/sluice"}

    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    assert body_of(response)["callback"]["webhook_url"] == "https://hooks.example.com/sluice"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Sluice-Callback-Url", "http://hooks.example.com/plain-http"),
        ("X-Sluice-Callback-Sns", "arn:aws:sqs:us-east-1:123456789012:not-a-topic"),
    ],
)
def test_a_bad_callback_is_a_422_naming_the_header(jobs, lambda_context, name, value):
    evt, response = submit(lambda_context, **{name.replace("-", "_"): value})

    error = assert_error(response, evt, 422, "validation_failed")

    assert error["param"] == name
    assert jobs.all_jobs() == []
    assert jobs.keys() == []


def test_an_oversized_inline_body_is_a_413_pointing_to_the_upload_flow(jobs, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_ASYNC_MAX_INLINE_BYTES", "32")

    evt, response = submit(lambda_context)

    error = assert_error(response, evt, 413, "payload_too_large")
    assert "/v1/models/iris/async/uploads" in error["message"]
    assert "X-Sluice-Input-Upload" in error["message"]
    assert error["details"] == {"size_bytes": len(IRIS_ROWS), "limit_bytes": 32}
    assert jobs.keys() == []


def test_an_empty_body_without_an_upload_is_a_400(jobs, lambda_context):
    evt, response = submit(lambda_context, body=None)

    error = assert_error(response, evt, 400, "invalid_request")
    assert error["param"] == "body"


def test_a_content_type_the_model_does_not_take_is_a_415(jobs, lambda_context):
    evt, response = submit(lambda_context, Content_Type="image/png")

    assert_error(response, evt, 415, "unsupported_media_type")
    assert jobs.all_jobs() == []


def test_unknown_model_is_404_and_a_model_not_allowed_is_403(jobs, lambda_context):
    for model, status, code in (("nope", 404, "model_not_found"), ("private-model", 403, "model_not_allowed")):
        evt = for_model(event("async-submit"), model)
        assert_error(call(evt, lambda_context), evt, status, code)
    assert jobs.all_jobs() == []


def test_a_start_that_fails_leaves_a_failed_job_with_the_reason(jobs, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_ASYNC_STATE_MACHINE_ARN", jobs.async_arn + "-missing")

    _, response = submit(lambda_context)

    assert response["statusCode"] >= 500
    (item,) = jobs.all_jobs()
    job = jobs.store.get(item["job_id"]["S"])
    assert job.status == JobStatus.FAILED
    assert job.failure_reason.startswith("Could not start:")


# --- upload flow ----------------------------------------------------------------------------------


def upload_ticket(lambda_context, size: int = len(IRIS_ROWS), tenant: str = "acme") -> dict:
    evt = as_caller(event("async-upload", body={"size_bytes": size}), tenant)
    response = call(evt, lambda_context)
    assert response["statusCode"] == 201, response["body"]
    return body_of(response)


def test_upload_flow_presigned_put_then_a_job_from_the_uploaded_object(jobs, lambda_context):
    ticket = upload_ticket(lambda_context)

    assert ticket["object"] == "upload"
    assert ticket["method"] == "PUT"
    assert ticket["upload_id"].startswith("up-")
    key = f"uploads/acme/{ticket['upload_id']}"
    assert ticket["s3_uri"] == f"s3://{DATA_BUCKET}/{key}"
    url = urlparse(ticket["url"])
    query = parse_qs(url.query)
    assert url.scheme == "https"
    assert key in url.path or key in url.netloc + url.path
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    # The size is part of the signature: S3 refuses a body of any other length.
    assert query["X-Amz-SignedHeaders"] == ["content-length;host"]
    assert query["X-Amz-Expires"] == [str(get_settings().presigned_url_seconds)]
    assert ticket["headers"] == {"Content-Length": str(len(IRIS_ROWS))}
    jobs.put(key, IRIS_ROWS)  # what the client's PUT does

    evt = event("async-from-upload", headers={"X-Sluice-Input-Upload": ticket["upload_id"]})
    response = call(evt, lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    assert job["input_location"] == ticket["s3_uri"]
    assert job["callback"]["webhook_url"] == "https://hooks.example.com/sluice/jobs"
    (execution,) = jobs.executions(jobs.async_arn)
    sent = jobs.execution_input(execution["executionArn"])
    assert (sent["input_bucket"], sent["input_key"]) == (DATA_BUCKET, key)
    assert jobs.store.get(job["id"]).details["input_bytes"] == len(IRIS_ROWS)
    assert jobs.keys("async/") == []  # no copy: the upload is the input


def test_an_upload_that_was_never_put_is_a_404(jobs, lambda_context):
    ticket = upload_ticket(lambda_context)
    evt = event("async-from-upload", headers={"X-Sluice-Input-Upload": ticket["upload_id"]})

    error = assert_error(call(evt, lambda_context), evt, 404, "upload_not_found")

    assert error["param"] == "X-Sluice-Input-Upload"
    assert jobs.all_jobs() == []


def test_another_callers_upload_is_not_found(jobs, lambda_context):
    ticket = upload_ticket(lambda_context, tenant="globex")
    jobs.put(f"uploads/globex/{ticket['upload_id']}", IRIS_ROWS)
    evt = event("async-from-upload", headers={"X-Sluice-Input-Upload": ticket["upload_id"]})

    assert_error(call(evt, lambda_context), evt, 404, "upload_not_found")
    assert jobs.all_jobs() == []


def test_a_malformed_upload_id_is_a_422_naming_the_header(jobs, lambda_context):
    evt = event("async-from-upload", headers={"X-Sluice-Input-Upload": "../uploads/globex/up-1"})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "X-Sluice-Input-Upload"


def test_a_body_and_an_upload_together_are_refused(jobs, lambda_context):
    ticket = upload_ticket(lambda_context)
    evt = event("async-submit", headers={"X-Sluice-Input-Upload": ticket["upload_id"]})

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert error["param"] == "X-Sluice-Input-Upload"


def test_an_upload_larger_than_the_limit_is_refused_up_front(jobs, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_ASYNC_MAX_UPLOAD_BYTES", "1000")
    evt = event("async-upload", body={"size_bytes": 1001})

    error = assert_error(call(evt, lambda_context), evt, 413, "payload_too_large")

    assert error["param"] == "body.size_bytes"


def test_upload_ticket_larger_than_model_accepts_is_refused(jobs, lambda_context):
    # iris runs on the async workflow, which invokes it synchronously: its catalog limit is 1024 bytes.
    evt = event("async-upload", body={"size_bytes": 2000})

    error = assert_error(call(evt, lambda_context), evt, 413, "payload_too_large")

    assert error["param"] == "body.size_bytes"
    assert error["details"] == {"size_bytes": 2000, "limit_bytes": 1024}
    assert "1024 bytes" in error["message"]
    assert "synchronously" in error["message"]
    assert tickets_of("acme") == []


def test_an_async_endpoint_takes_uploads_above_the_synchronous_limit(jobs, lambda_context):
    size = 64 * 1024 * 1024  # above the stack's 6 MB synchronous default, within AsyncMaxUploadBytes
    evt = for_model(event("async-upload", body={"size_bytes": size}), "churn-async")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 201, response["body"]
    assert body_of(response)["size_bytes"] == size


def test_an_uploaded_file_larger_than_the_model_accepts_is_refused_before_a_job_exists(jobs, lambda_context):
    upload_id = "up-" + "a" * 32  # e.g. a ticket issued before the model's limit was lowered
    jobs.put(f"uploads/acme/{upload_id}", b"x" * 2000)
    evt = event("async-from-upload", headers={"X-Sluice-Input-Upload": upload_id})

    error = assert_error(call(evt, lambda_context), evt, 413, "payload_too_large")

    assert error["param"] == "X-Sluice-Input-Upload"
    assert error["details"] == {"size_bytes": 2000, "limit_bytes": 1024}
    assert jobs.all_jobs() == []


def tickets_of(caller: str) -> list[dict]:
    items = shared_client("dynamodb").query(
        TableName=UPLOAD_TICKETS_TABLE,
        KeyConditionExpression="#c = :c",
        ExpressionAttributeNames={"#c": "caller"},
        ExpressionAttributeValues={":c": {"S": caller}},
    )["Items"]
    return items


def test_caller_cannot_open_unlimited_upload_tickets(jobs, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_ASYNC_MAX_OPEN_UPLOADS", "3")
    for _ in range(3):
        upload_ticket(lambda_context)
    evt = event("async-upload", body={"size_bytes": len(IRIS_ROWS)})

    response = call(evt, lambda_context)

    error = assert_error(response, evt, 429, "too_many_open_uploads")
    assert error["details"] == {"open_uploads": 3, "limit": 3}
    assert "at most 3" in error["message"]
    retry_after = int(header(response, "Retry-After"))
    assert 0 < retry_after <= get_settings().presigned_url_seconds
    assert len(tickets_of("acme")) == 3  # the refused request recorded nothing
    # The cap is per caller: another tenant still gets a ticket.
    upload_ticket(lambda_context, tenant="globex")


def test_an_upload_used_by_a_job_frees_its_ticket(jobs, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_ASYNC_MAX_OPEN_UPLOADS", "1")
    ticket = upload_ticket(lambda_context)
    jobs.put(f"uploads/acme/{ticket['upload_id']}", IRIS_ROWS)
    evt = event("async-from-upload", headers={"X-Sluice-Input-Upload": ticket["upload_id"]})
    assert call(evt, lambda_context)["statusCode"] == 202

    upload_ticket(lambda_context)  # the used ticket no longer counts


def test_expired_upload_tickets_no_longer_count(jobs, lambda_context, monkeypatch):
    import sluice.jobs.kinds.async_inference.submit as submit_module

    set_setting(monkeypatch, "SLUICE_ASYNC_MAX_OPEN_UPLOADS", "1")
    upload_ticket(lambda_context)
    later = time.time() + get_settings().presigned_url_seconds + 1
    # TTL has not deleted the row yet (it may take days): the count must skip it by its expiry.
    monkeypatch.setattr(submit_module.time, "time", lambda: later)

    upload_ticket(lambda_context)

    assert len(tickets_of("acme")) == 2


def test_an_upload_request_without_a_size_is_a_422(jobs, lambda_context):
    evt = event("async-upload", body={})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body.size_bytes"


# --- Idempotency-Key ------------------------------------------------------------------------------


def test_the_same_idempotency_key_twice_gives_one_job_one_object_one_execution(jobs, lambda_context):
    _, first = submit(lambda_context, key="order-42")
    _, second = submit(lambda_context, key="order-42")

    assert first["statusCode"] == second["statusCode"] == 202
    assert body_of(first)["id"] == body_of(second)["id"]
    assert header(first, "Idempotent-Replayed") is None
    assert header(second, "Idempotent-Replayed") == "true"
    assert header(second, "Location") == f"/v1/jobs/{body_of(first)['id']}"
    assert len(jobs.all_jobs()) == 1
    assert len(jobs.keys("async/")) == 1
    assert len(jobs.executions(jobs.async_arn)) == 1


def test_the_same_key_with_a_different_body_is_a_clear_422(jobs, lambda_context):
    submit(lambda_context, key="order-42")

    evt, response = submit(lambda_context, key="order-42", body=b'{"instances": [[1, 2, 3, 4]]}')

    error = assert_error(response, evt, 422, "idempotency_key_reused")
    assert error["param"] == "Idempotency-Key"
    assert "different request" in error["message"]
    assert len(jobs.all_jobs()) == 1


def test_without_the_header_every_request_is_a_new_job(jobs, lambda_context):
    ids = {body_of(submit(lambda_context)[1])["id"] for _ in range(2)}

    assert len(ids) == 2
    assert len(jobs.executions(jobs.async_arn)) == 2


def test_idempotency_keys_are_per_caller(jobs, lambda_context):
    evt = event("async-submit", headers={"Idempotency-Key": "shared-key"})

    acme = body_of(call(evt, lambda_context))
    globex = body_of(call(as_caller(evt, "globex"), lambda_context))

    assert acme["id"] != globex["id"]
    assert jobs.store.get(globex["id"]).caller == "globex"


def test_a_malformed_idempotency_key_is_a_400(jobs, lambda_context):
    evt, response = submit(lambda_context, key="has spaces in it")

    error = assert_error(response, evt, 400, "invalid_request")
    assert error["param"] == "Idempotency-Key"


def test_a_retry_while_the_first_request_is_still_running_is_a_409_with_retry_after(jobs, lambda_context):
    answers = []

    def retry_meanwhile(**_):
        # The client times out and retries while the first request is writing the input.
        if not answers:
            answers.append(submit(lambda_context, key="order-7"))

    clients.get("s3").meta.events.register("before-call.s3.PutObject", retry_meanwhile)
    try:
        _, first = submit(lambda_context, key="order-7")
    finally:
        clients.get("s3").meta.events.unregister("before-call.s3.PutObject", retry_meanwhile)

    assert first["statusCode"] == 202, first["body"]
    ((evt, retried),) = answers
    error = assert_error(retried, evt, 409, "idempotency_key_in_progress")
    assert error["param"] == "Idempotency-Key"
    assert header(retried, "Retry-After")
    assert len(jobs.all_jobs()) == 1
    # Once the first is done, the same retry gets its job.
    assert body_of(submit(lambda_context, key="order-7")[1])["id"] == body_of(first)["id"]


def test_a_refused_invoke_endpoint_async_fails_the_job_and_frees_the_idempotency_key(jobs, stubbed, lambda_context):
    runtime = stubbed("sagemaker-runtime")
    runtime.add_client_error(
        "invoke_endpoint_async", service_error_code="ValidationError", service_message="Endpoint is Updating"
    )
    evt = for_model(event("async-submit", headers={"Idempotency-Key": "k-1"}), "churn-async")

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert "Endpoint is Updating" in error["message"]
    (item,) = jobs.all_jobs()
    failed = jobs.store.get(item["job_id"]["S"])
    assert failed.status == JobStatus.FAILED
    assert "Endpoint is Updating" in failed.failure_reason
    # The failed attempt is not remembered: the same key may be retried.
    runtime.add_response(
        "invoke_endpoint_async",
        {"InferenceId": "x", "OutputLocation": f"s3://{DATA_BUCKET}/async-endpoint-output/x.out"},
    )
    retry = call(evt, lambda_context)
    assert retry["statusCode"] == 202, retry["body"]
    assert body_of(retry)["id"] != failed.job_id


def test_the_openapi_document_lists_the_job_routes(lambda_context):
    paths = body_of(call(event("docs"), lambda_context))["paths"]

    assert set(paths["/v1/models/{model}/async"]) == {"post"}
    assert "202" in paths["/v1/models/{model}/async"]["post"]["responses"]
    assert set(paths["/v1/models/{model}/async/uploads"]) == {"post"}
    assert set(paths["/v1/batch-jobs"]) == {"post"}
    assert set(paths["/v1/jobs"]) == {"get"}
    assert set(paths["/v1/jobs/{job_id}"]) == {"get"}
    assert set(paths["/v1/jobs/{job_id}/cancel"]) == {"post"}
    headers = {p["name"] for p in paths["/v1/models/{model}/async"]["post"]["parameters"] if p["in"] == "header"}
    assert {"Idempotency-Key", "X-Sluice-Input-Upload", "X-Sluice-Callback-Url"} <= headers
