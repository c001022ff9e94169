"""Cross-caller attacks on every job and upload route, through the API handler against moto.

The pair at the heart of them: IAM users `user/a/b` and `user/a_b`, whose storage prefixes were one
and the same while the caller segment mapped "/" and ":" alike to "_". Each test is the attack, named
after it; the other caller gets 403 or 404 and its request touches nothing of the victim's.
"""

from __future__ import annotations

import copy

import pytest

from sluice.storage.keys import BATCH_OUTPUT_PREFIX, UPLOADS_PREFIX, batch_output_prefix, caller_prefix
from tests.api_support import assert_error, body_of, call, event, set_header
from tests.jobs_support import DATA_BUCKET

SLASH = "arn:aws:iam::123456789012:user/a/b"
UNDERSCORE = "arn:aws:iam::123456789012:user/a_b"
ROWS = b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"
JOB_ROUTES = ("job-get", "job-cancel")


def as_iam(evt: dict, user_arn: str) -> dict:
    """The same request signed with SigV4 by `user_arn` on the IAM API (no authorizer context)."""
    evt = copy.deepcopy(evt)
    evt["requestContext"]["authorizer"] = None
    evt["requestContext"]["identity"].update(userArn=user_arn, caller="AIDAEXAMPLE", accountId="123456789012")
    return evt


def upload(jobs, lambda_context, user_arn: str) -> dict:
    """An upload ticket of user_arn's, and the file PUT to it."""
    evt = as_iam(event("async-upload", body={"size_bytes": len(ROWS)}), user_arn)
    response = call(evt, lambda_context)
    assert response["statusCode"] == 201, response["body"]
    ticket = body_of(response)
    jobs.put(ticket["s3_uri"].removeprefix(f"s3://{DATA_BUCKET}/"), ROWS)
    return ticket


def batch(lambda_context, user_arn: str, **body: str):
    evt = as_iam(event("batch-job-create", body={"model": "iris", "content_type": "text/csv", **body}), user_arn)
    set_header(evt, "Idempotency-Key", None)
    return evt, call(evt, lambda_context)


def batch_job_of(jobs, lambda_context, user_arn: str) -> dict:
    ticket = upload(jobs, lambda_context, user_arn)
    _, response = batch(lambda_context, user_arn, input_prefix=ticket["s3_uri"])
    assert response["statusCode"] == 202, response["body"]
    return body_of(response)


def for_job(name: str, job_id: str, user_arn: str) -> dict:
    evt = as_iam(event(name), user_arn)
    old = evt["pathParameters"]["job_id"]
    evt["pathParameters"]["job_id"] = job_id
    evt["path"] = evt["path"].replace(old, job_id)
    return evt


# --- POST /v1/models/{model}/async/uploads ----------------------------------------------------------


def test_iam_user_a_b_upload_ticket_does_not_land_in_user_a_slash_b_prefix(jobs, lambda_context):
    victim = upload(jobs, lambda_context, SLASH)
    attacker = upload(jobs, lambda_context, UNDERSCORE)

    victim_folder = f"s3://{DATA_BUCKET}/{caller_prefix(UPLOADS_PREFIX, SLASH)}"
    attacker_folder = f"s3://{DATA_BUCKET}/{caller_prefix(UPLOADS_PREFIX, UNDERSCORE)}"
    assert victim["s3_uri"].startswith(victim_folder)
    assert attacker["s3_uri"].startswith(attacker_folder)
    assert not attacker["s3_uri"].startswith(victim_folder)


# --- POST /v1/models/{model}/async ------------------------------------------------------------------


def test_iam_user_a_b_cannot_start_an_async_job_from_user_a_slash_b_upload(jobs, lambda_context):
    victim = upload(jobs, lambda_context, SLASH)
    evt = as_iam(event("async-from-upload", headers={"X-Sluice-Input-Upload": victim["upload_id"]}), UNDERSCORE)
    set_header(evt, "Idempotency-Key", None)

    error = assert_error(call(evt, lambda_context), evt, 404, "upload_not_found")

    assert error["param"] == "X-Sluice-Input-Upload"
    assert jobs.all_jobs() == []
    assert jobs.executions(jobs.async_arn) == []


def test_a_tenant_cannot_start_an_async_job_from_another_tenants_upload_id(jobs, lambda_context):
    evt = event("async-upload", body={"size_bytes": len(ROWS)})
    evt["requestContext"]["authorizer"].update(tenant="globex", principalId="globex")
    ticket = body_of(call(evt, lambda_context))
    jobs.put(ticket["s3_uri"].removeprefix(f"s3://{DATA_BUCKET}/"), ROWS)
    steal = event("async-from-upload", headers={"X-Sluice-Input-Upload": ticket["upload_id"]})
    set_header(steal, "Idempotency-Key", None)

    assert_error(call(steal, lambda_context), steal, 404, "upload_not_found")
    assert jobs.all_jobs() == []


# --- POST /v1/batch-jobs ----------------------------------------------------------------------------


def test_iam_user_a_b_cannot_batch_score_user_a_slash_b_uploads(jobs, lambda_context):
    victim = upload(jobs, lambda_context, SLASH)

    for location in (victim["s3_uri"], f"s3://{DATA_BUCKET}/{caller_prefix(UPLOADS_PREFIX, SLASH)}"):
        evt, response = batch(lambda_context, UNDERSCORE, input_prefix=location)
        error = assert_error(response, evt, 403, "location_not_allowed")
        assert error["param"] == "input_prefix"
    assert jobs.all_jobs() == []
    assert jobs.executions(jobs.batch_arn) == []


def test_iam_user_a_b_cannot_batch_score_user_a_slash_b_batch_outputs(jobs, lambda_context):
    job = batch_job_of(jobs, lambda_context, SLASH)
    jobs.put(f"{batch_output_prefix(SLASH, job['id'])}rows.csv.out", b"[0]\n")

    evt, response = batch(lambda_context, UNDERSCORE, input_prefix=job["output_location"])

    assert_error(response, evt, 403, "location_not_allowed")
    assert len(jobs.all_jobs()) == 1


def test_iam_user_a_b_cannot_write_its_batch_output_into_user_a_slash_b_prefix(jobs, lambda_context):
    """Writing into the victim's folder would overwrite its results, or plant files it later scores."""
    mine = upload(jobs, lambda_context, UNDERSCORE)
    victim_folder = f"s3://{DATA_BUCKET}/{caller_prefix(BATCH_OUTPUT_PREFIX, SLASH)}planted/"

    evt, response = batch(lambda_context, UNDERSCORE, input_prefix=mine["s3_uri"], output_prefix=victim_folder)

    error = assert_error(response, evt, 403, "location_not_allowed")
    assert error["param"] == "output_prefix"
    assert jobs.executions(jobs.batch_arn) == []


def test_iam_user_a_b_cannot_copy_out_user_a_slash_b_outputs_through_its_own_job(jobs, lambda_context):
    """A job of the attacker's whose output_prefix is the victim's finished job folder would list the
    victim's output files, with presigned URLs, on GET /v1/jobs/{id}."""
    victim_job = batch_job_of(jobs, lambda_context, SLASH)
    mine = upload(jobs, lambda_context, UNDERSCORE)

    evt, response = batch(
        lambda_context, UNDERSCORE, input_prefix=mine["s3_uri"], output_prefix=victim_job["output_location"]
    )

    assert_error(response, evt, 403, "location_not_allowed")


def test_user_a_slash_b_still_batch_scores_its_own_uploads_after_the_fix(jobs, lambda_context):
    job = batch_job_of(jobs, lambda_context, SLASH)

    assert job["output_location"] == f"s3://{DATA_BUCKET}/{batch_output_prefix(SLASH, job['id'])}"
    (execution,) = jobs.executions(jobs.batch_arn)
    sent = jobs.execution_input(execution["executionArn"])
    assert sent["input_prefix"].startswith(caller_prefix(UPLOADS_PREFIX, SLASH))


# --- GET /v1/jobs, GET /v1/jobs/{id}, POST /v1/jobs/{id}/cancel ----------------------------------------


def test_iam_user_a_b_cannot_see_or_cancel_user_a_slash_b_jobs(jobs, lambda_context):
    victim_job = batch_job_of(jobs, lambda_context, SLASH)

    for name in JOB_ROUTES:
        evt = for_job(name, victim_job["id"], UNDERSCORE)
        assert_error(call(evt, lambda_context), evt, 404, "job_not_found")
    listing = as_iam(event("jobs-list"), UNDERSCORE)
    response = call(listing, lambda_context)
    assert response["statusCode"] == 200, response["body"]
    assert body_of(response)["data"] == []
    assert jobs.store.get(victim_job["id"]).status.value == "QUEUED"  # the cancel did nothing
    own = call(for_job("job-get", victim_job["id"], SLASH), lambda_context)
    assert body_of(own)["id"] == victim_job["id"]


# --- principals that cannot identify a caller ------------------------------------------------------


@pytest.mark.parametrize("route", ["async-upload", "async-submit", "batch-job-create", "jobs-list", *JOB_ROUTES])
def test_a_federated_user_cannot_reach_any_job_route_under_a_name_it_chose(jobs, lambda_context, route):
    evt = as_iam(event(route), "arn:aws:sts::123456789012:federated-user/platform")

    error = assert_error(call(evt, lambda_context), evt, 403, "identity_not_accepted")

    assert "GetFederationToken" in error["message"]
    assert jobs.all_jobs() == []
    assert jobs.keys() == []
