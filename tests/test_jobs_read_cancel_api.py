"""GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel: a caller's own jobs, and only those."""

from __future__ import annotations

import copy
from urllib.parse import parse_qs, urlparse

import pytest

from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.settings import get_settings
from tests.api_support import assert_error, body_of, call, event
from tests.conftest import shared_client
from tests.jobs_support import DATA_BUCKET, as_caller

JOB_ID = "job-0123456789abcdef0123456789abcdef"  # the id in events/api/job-*.json


def a_job(job_id: str = JOB_ID, caller: str = "acme", kind: JobKind = JobKind.ASYNC, **fields) -> Job:
    location = f"s3://{DATA_BUCKET}/async/{caller}/{job_id}/input"
    if kind == JobKind.BATCH:
        location = f"s3://{DATA_BUCKET}/uploads/{caller}/scoring/"
        fields.setdefault("output_location", f"s3://{DATA_BUCKET}/batch-output/{caller}/{job_id}/")
    return Job(job_id=job_id, caller=caller, kind=kind, model="iris", input_location=location, **fields)


def with_job_id(name: str, job_id: str) -> dict:
    evt = copy.deepcopy(event(name))
    evt["pathParameters"]["job_id"] = job_id
    evt["path"] = evt["path"].replace(JOB_ID, job_id)
    return evt


def listing(lambda_context, tenant: str = "acme", **query: str) -> dict:
    evt = as_caller(event("jobs-list"), tenant)
    evt["queryStringParameters"] = query or None
    response = call(evt, lambda_context)
    assert response["statusCode"] == 200, response["body"]
    return body_of(response)


# --- GET /v1/jobs/{id} ----------------------------------------------------------------------------


def test_a_queued_job_shows_its_status_and_timestamps_but_no_download(jobs, lambda_context):
    created = jobs.store.create(a_job())

    response = call(event("job-get"), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    job = body_of(response)
    assert job["id"] == JOB_ID
    assert job["status"] == "QUEUED"
    assert job["created_at"] == created.created_at
    assert job["updated_at"]
    assert job["started_at"] is None
    assert job["output_url"] is None
    assert job["links"]["cancel"] == f"/v1/jobs/{JOB_ID}/cancel"


def test_a_running_job_has_a_start_time_and_still_no_download(jobs, lambda_context):
    jobs.store.create(a_job())
    jobs.store.transition(JOB_ID, JobStatus.RUNNING)

    job = body_of(call(event("job-get"), lambda_context))

    assert job["status"] == "RUNNING"
    assert job["started_at"]
    assert job["output_url"] is None


def test_a_succeeded_async_job_has_a_presigned_download_url(jobs, lambda_context):
    output = f"async/acme/{JOB_ID}/output"
    jobs.store.create(a_job())
    jobs.put(output, b'{"predictions": ["setosa"]}')
    jobs.store.transition(JOB_ID, JobStatus.SUCCEEDED, output_location=f"s3://{DATA_BUCKET}/{output}")

    job = body_of(call(event("job-get"), lambda_context))

    assert job["status"] == "SUCCEEDED"
    assert job["finished_at"]
    assert job["output_location"] == f"s3://{DATA_BUCKET}/{output}"
    url = urlparse(job["output_url"])
    query = parse_qs(url.query)
    assert url.scheme == "https"
    assert url.path.endswith(output)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]  # SigV4: required for SSE-KMS objects
    assert query["X-Amz-Expires"] == [str(get_settings().presigned_url_seconds)]
    assert job["output_urls_expire_at"]
    assert "cancel" not in job["links"]


def test_a_succeeded_batch_job_lists_presigned_urls_of_its_output_files(jobs, lambda_context):
    jobs.store.create(a_job(kind=JobKind.BATCH))
    for part in ("part-1.csv.out", "part-2.csv.out"):
        jobs.put(f"batch-output/acme/{JOB_ID}/{part}", b"setosa\n")
    jobs.store.transition(JOB_ID, JobStatus.SUCCEEDED)

    job = body_of(call(event("job-get"), lambda_context))

    assert [item["key"] for item in job["output_files"]] == [
        f"batch-output/acme/{JOB_ID}/part-1.csv.out",
        f"batch-output/acme/{JOB_ID}/part-2.csv.out",
    ]
    assert all(item["size_bytes"] == 7 for item in job["output_files"])
    assert all("X-Amz-Signature=" in item["url"] for item in job["output_files"])
    assert job["output_files_truncated"] is False


def test_a_failed_job_shows_its_reason_and_no_download(jobs, lambda_context):
    jobs.store.create(a_job())
    jobs.store.transition(JOB_ID, JobStatus.FAILED, failure_reason="ModelError: the container answered 500")

    job = body_of(call(event("job-get"), lambda_context))

    assert job["status"] == "FAILED"
    assert job["failure_reason"] == "ModelError: the container answered 500"
    assert job["output_url"] is None
    assert job["output_files"] is None


def test_an_unknown_job_is_404(jobs, lambda_context):
    evt = event("job-get")

    error = assert_error(call(evt, lambda_context), evt, 404, "job_not_found")

    assert error["param"] == "job_id"


def test_another_callers_job_is_404_on_get_list_and_cancel(jobs, lambda_context):
    jobs.store.create(a_job(caller="globex"))

    for name in ("job-get", "job-cancel"):
        evt = event(name)
        not_found = assert_error(call(evt, lambda_context), evt, 404, "job_not_found")
        # Exactly what a job that does not exist gets: nothing tells that the id is taken.
        assert not_found["message"] == f"Job '{JOB_ID}' does not exist. GET /v1/jobs lists your jobs."
    assert listing(lambda_context)["data"] == []
    assert [job["id"] for job in listing(lambda_context, tenant="globex")["data"]] == [JOB_ID]
    assert jobs.store.get(JOB_ID).status == JobStatus.QUEUED  # acme's cancel did nothing


# --- GET /v1/jobs ---------------------------------------------------------------------------------


def seed(jobs) -> list[str]:
    """Seven acme jobs (newest last) of both kinds and several statuses, plus one of globex."""
    ids = []
    for i in range(7):
        job_id = f"job-{i:032x}"
        kind = JobKind.BATCH if i % 3 == 0 else JobKind.ASYNC
        jobs.store.create(a_job(job_id, kind=kind, created_at=f"2026-11-23T18:00:0{i}.000+00:00"))
        if i % 2:
            jobs.store.transition(job_id, JobStatus.RUNNING)
        ids.append(job_id)
    jobs.store.create(a_job("job-" + "f" * 32, caller="globex"))
    return ids


def test_listing_pages_newest_first_until_no_token(jobs, lambda_context):
    ids = seed(jobs)

    seen, token, pages = [], None, 0
    while True:
        query = {"limit": "3"} | ({"next_token": token} if token else {})
        page = listing(lambda_context, **query)
        assert page["object"] == "list"
        assert len(page["data"]) <= 3
        seen += [job["id"] for job in page["data"]]
        token, pages = page["next_token"], pages + 1
        if token is None:
            break

    assert seen == list(reversed(ids))
    assert pages >= 3


def test_listing_defaults_to_twenty(jobs, lambda_context):
    for i in range(21):
        jobs.store.create(a_job(f"job-{i:032x}"))

    page = listing(lambda_context)

    assert len(page["data"]) == 20
    assert page["next_token"]


def test_listing_filters_by_status_and_kind(jobs, lambda_context):
    ids = seed(jobs)

    running = [job["id"] for job in listing(lambda_context, status="RUNNING")["data"]]
    batch = [job["id"] for job in listing(lambda_context, kind="batch")["data"]]
    both = [job["id"] for job in listing(lambda_context, status="running", kind="BATCH")["data"]]

    assert running == [ids[i] for i in (5, 3, 1)]
    assert batch == [ids[i] for i in (6, 3, 0)]
    assert both == [ids[3]]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "query.limit"),
        ({"limit": "101"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"status": "DONE"}, "query.status"),
        ({"kind": "sandcastle"}, "query.kind"),
        ({"next_token": "not-a-token!"}, "query.next_token"),
        ({"color": "blue"}, "query.color"),
    ],
)
def test_bad_listing_parameters_are_a_422_naming_the_parameter(jobs, lambda_context, query, param):
    evt = event("jobs-list")
    evt["queryStringParameters"] = query

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == param


def test_a_page_token_of_another_caller_is_refused(jobs, lambda_context):
    seed(jobs)
    token = listing(lambda_context, limit="2")["next_token"]
    evt = as_caller(event("jobs-list"), "globex")
    evt["queryStringParameters"] = {"next_token": token}

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "query.next_token"


# --- POST /v1/jobs/{id}/cancel --------------------------------------------------------------------


def started_async_job(jobs, lambda_context) -> str:
    response = call(event("async-submit"), lambda_context)
    assert response["statusCode"] == 202, response["body"]
    return body_of(response)["id"]


def test_cancelling_a_running_async_job_stops_its_execution(jobs, lambda_context):
    job_id = started_async_job(jobs, lambda_context)
    jobs.store.transition(job_id, JobStatus.RUNNING)

    response = call(with_job_id("job-cancel", job_id), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    job = body_of(response)
    assert job["status"] == "CANCELLED"
    assert job["finished_at"]
    assert "cancel" not in job["links"]
    assert job["details"]["cancelled_by"] == "acme"  # the audit trail of the control action
    (execution,) = jobs.executions(jobs.async_arn)
    assert execution["status"] == "ABORTED"
    # Late news from the stopped work cannot undo the cancellation.
    assert jobs.store.transition(job_id, JobStatus.SUCCEEDED) is None
    assert jobs.store.get(job_id).status == JobStatus.CANCELLED


def test_cancelling_a_batch_job_also_stops_its_transform_job(jobs, stubbed, lambda_context):
    stepfunctions = shared_client("stepfunctions")
    execution = stepfunctions.start_execution(stateMachineArn=jobs.batch_arn, name=JOB_ID, input="{}")["executionArn"]
    jobs.store.create(a_job(kind=JobKind.BATCH, execution_id=execution, details={"transform_job_name": "sluice-tj-1"}))
    jobs.store.transition(JOB_ID, JobStatus.RUNNING)
    sagemaker = stubbed("sagemaker")
    sagemaker.add_response("stop_transform_job", {}, expected_params={"TransformJobName": "sluice-tj-1"})

    response = call(event("job-cancel"), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert body_of(response)["status"] == "CANCELLED"
    # What the workflow recorded is kept beside the cancellation note.
    assert body_of(response)["details"]["transform_job_name"] == "sluice-tj-1"
    assert body_of(response)["details"]["cancelled_by"] == "acme"
    (stopped,) = jobs.executions(jobs.batch_arn)
    assert stopped["status"] == "ABORTED"


def test_cancelling_a_batch_job_whose_transform_already_ended_still_cancels(jobs, stubbed, lambda_context):
    jobs.store.create(a_job(kind=JobKind.BATCH, details={"transform_job_name": "sluice-tj-2"}))
    sagemaker = stubbed("sagemaker")
    sagemaker.add_client_error(
        "stop_transform_job", service_error_code="ValidationException", service_message="Job is already Completed"
    )

    response = call(event("job-cancel"), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert jobs.store.get(JOB_ID).status == JobStatus.CANCELLED


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_cancelling_a_finished_job_is_a_409_that_says_why(jobs, lambda_context, final):
    jobs.store.create(a_job())
    jobs.store.transition(JOB_ID, final)
    evt = event("job-cancel")

    error = assert_error(call(evt, lambda_context), evt, 409, "job_not_cancellable")

    assert f"already {final.value}" in error["message"]
    assert "only QUEUED, AWAITING_APPROVAL or RUNNING" in error["message"]
    assert error["details"] == {"status": final.value}
    assert jobs.store.get(JOB_ID).status == final


def test_cancelling_an_unknown_job_is_404(jobs, lambda_context):
    evt = event("job-cancel")

    assert_error(call(evt, lambda_context), evt, 404, "job_not_found")
