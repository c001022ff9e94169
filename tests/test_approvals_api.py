"""GET /v1/approvals and POST /v1/approvals/{id}/approve|deny: operators decide, consumers cannot, once only.

moto's plain Step Functions backend accepts any task token; the tokens the API sends are captured at
the boto3 boundary (the workflow tests run the real wait in moto's interpreter).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sluice.approvals.models import Approval, ApprovalStatus, approval_id_for
from sluice.approvals.store import ApprovalStore
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.settings import get_settings
from tests.api_support import assert_error, body_of, call, event, set_header
from tests.conftest import shared_client
from tests.jobs_support import (
    APPROVALS_TABLE,
    as_caller,
    as_consumer,
    as_operator,
    for_path_id,
)

JOB_ID = "job-0123456789abcdef0123456789abcdef"
TOKEN = "AQCEAAAAKgAAAAMAAAAAAAAAAtoken-of-the-waiting-execution=="
IAM_OPERATOR = "arn:aws:sts::123456789012:assumed-role/platform-oncall/alice"
IAM_CONSUMER = "arn:aws:sts::123456789012:assumed-role/batch-scorer/nightly"


def approvals() -> ApprovalStore:
    return ApprovalStore(shared_client("dynamodb"), APPROVALS_TABLE)


def waiting_job(jobs, job_id: str = JOB_ID, *, expires_in: float = 3600, instance_type: str = "ml.p3.2xlarge") -> str:
    """A batch job AWAITING_APPROVAL and its pending approval, as the workflow's request step leaves them."""
    approval_id = approval_id_for("batch", job_id)
    jobs.store.create(
        Job(
            job_id=job_id,
            caller="acme",
            kind=JobKind.BATCH,
            model="iris",
            status=JobStatus.AWAITING_APPROVAL,
            input_location="s3://sluice-test-data/uploads/acme/x/",
            execution_id=f"arn:aws:states:us-east-1:123456789012:execution:sluice-test-batch-transform:{job_id}",
            details={"instance_type": instance_type, "instance_count": 2, "approval_id": approval_id},
        )
    )
    now = datetime.now(UTC)
    approvals().put_pending(
        Approval(
            approval_id=approval_id,
            job_id=job_id,
            kind="batch",
            instance_type=instance_type,
            instance_count=2,
            requested_by="acme",
            requested_at=now.isoformat(timespec="milliseconds"),
            expires_at=(now + timedelta(seconds=expires_in)).isoformat(timespec="milliseconds"),
            task_token=TOKEN,
        )
    )
    return approval_id


def decision_event(decision: str, approval_id: str, body: Any = "default") -> dict:
    evt = for_path_id(event(f"approval-{decision}"), "approval_id", approval_id)
    if body != "default":
        evt["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
        set_header(evt, "Content-Length", str(len((evt["body"] or "").encode())))
    return evt


@contextmanager
def task_calls() -> Iterator[list[tuple[str, dict]]]:
    """SendTaskSuccess / SendTaskFailure as the API sends them (operation, parameters)."""
    from sluice import clients

    client = clients.get("stepfunctions")
    sent: list[tuple[str, dict]] = []

    def record(params: dict, model: Any, **_: Any) -> None:
        sent.append((model.name, dict(params)))

    client.meta.events.register("before-parameter-build.sfn.SendTaskSuccess", record)
    client.meta.events.register("before-parameter-build.sfn.SendTaskFailure", record)
    try:
        yield sent
    finally:
        client.meta.events.unregister("before-parameter-build.sfn.SendTaskSuccess", record)
        client.meta.events.unregister("before-parameter-build.sfn.SendTaskFailure", record)


def iam_event(evt: dict, user_arn: str) -> dict:
    """The same request signed with SigV4 on the IAM API (no authorizer context)."""
    evt = copy.deepcopy(evt)
    evt["requestContext"]["authorizer"] = None
    evt["requestContext"]["identity"].update(userArn=user_arn, accountId="123456789012")
    set_header(evt, "Authorization", "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/...")
    return evt


# ---------------------------------------------------------------------- consumers are refused
def test_a_consumer_key_cannot_list_pending_approvals(jobs, lambda_context):
    waiting_job(jobs)
    evt = as_consumer(event("approvals-list"))

    error = assert_error(call(evt, lambda_context), evt, 403, "operator_required", "permission_error")

    assert "GET /v1/approvals needs an operator" in error["message"]
    assert error["details"] == {"route": "GET /v1/approvals", "role": "consumer"}


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_consumer_cannot_decide_its_own_jobs_approval(jobs, lambda_context, decision):
    approval_id = waiting_job(jobs)
    evt = as_consumer(decision_event(decision, approval_id))

    with task_calls() as sent:
        error = assert_error(call(evt, lambda_context), evt, 403, "operator_required")

    assert f"POST /v1/approvals/{{id}}/{decision} needs an operator" in error["message"]
    assert sent == []
    assert approvals().get(approval_id).status == ApprovalStatus.PENDING
    assert "approval" not in jobs.store.get(JOB_ID).details


def test_a_role_the_authorizer_never_wrote_is_a_consumer(jobs, lambda_context):
    evt = as_consumer(event("approvals-list"))
    evt["requestContext"]["authorizer"]["role"] = "Operator "

    assert_error(call(evt, lambda_context), evt, 403, "operator_required")


def test_an_iam_principal_outside_operator_principals_is_a_consumer(jobs, lambda_context, monkeypatch):
    monkeypatch.setenv("SLUICE_OPERATOR_PRINCIPALS", "arn:aws:iam::123456789012:role/platform-*")
    get_settings.cache_clear()
    evt = iam_event(event("approvals-list"), IAM_CONSUMER)

    error = assert_error(call(evt, lambda_context), evt, 403, "operator_required")

    assert "arn:aws:iam::123456789012:role/batch-scorer" in error["message"]


def test_an_iam_role_matching_operator_principals_is_an_operator(jobs, lambda_context, monkeypatch):
    monkeypatch.setenv(
        "SLUICE_OPERATOR_PRINCIPALS", "arn:aws:iam::999999999999:role/x, arn:aws:iam::123456789012:role/platform-*"
    )
    get_settings.cache_clear()
    approval_id = waiting_job(jobs)

    response = call(iam_event(event("approvals-list"), IAM_OPERATOR), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert [item["id"] for item in body_of(response)["data"]] == [approval_id]


def test_no_iam_caller_is_an_operator_when_operator_principals_is_empty(jobs, lambda_context):
    evt = iam_event(event("approvals-list"), IAM_OPERATOR)

    assert_error(call(evt, lambda_context), evt, 403, "operator_required")


# ---------------------------------------------------------------------- operators
def test_an_operator_lists_pending_requests_and_never_sees_their_task_tokens(jobs, lambda_context):
    first = waiting_job(jobs)
    second = waiting_job(jobs, "job-11111111111111111111111111111111", instance_type="ml.g5.2xlarge")
    expired = waiting_job(jobs, "job-22222222222222222222222222222222", expires_in=-1)

    response = call(event("approvals-list"), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    data = body_of(response)["data"]
    assert [item["id"] for item in data] == [first, second]
    assert expired not in {item["id"] for item in data}
    assert set(data[0]) == {
        "id",
        "job_id",
        "kind",
        "instance_type",
        "instance_count",
        "requested_by",
        "requested_at",
        "expires_at",
    }
    assert (data[0]["job_id"], data[0]["kind"], data[0]["instance_type"], data[0]["instance_count"]) == (
        JOB_ID,
        "batch",
        "ml.p3.2xlarge",
        2,
    )
    assert data[0]["requested_by"] == "acme"
    assert TOKEN not in response["body"]


def test_an_operator_approves_and_the_waiting_workflow_gets_its_token(jobs, lambda_context):
    approval_id = waiting_job(jobs)

    with task_calls() as sent:
        response = call(decision_event("approve", approval_id), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    answer = body_of(response)
    assert answer["id"] == approval_id
    assert answer["status"] == "approved"
    assert answer["decision"]["decision"] == "approved"
    assert answer["decision"]["by"] == "platform"
    assert answer["decision"]["reason"] == "Quarterly re-scoring, budget ticket FIN-2211"
    assert TOKEN not in response["body"]
    [(operation, params)] = sent
    assert operation == "SendTaskSuccess"
    assert params["taskToken"] == TOKEN
    assert json.loads(params["output"])["decision"] == "approved"
    job = jobs.store.get(JOB_ID)
    assert job.details["approval"] == answer["decision"]
    assert set(job.details["approval"]) == {"decision", "by", "at", "reason"}
    # The durable audit record: who decided, when and why, on the approval itself.
    stored = approvals().get(approval_id)
    assert (stored.status, stored.decided_by, stored.reason) == (
        ApprovalStatus.APPROVED,
        "platform",
        "Quarterly re-scoring, budget ticket FIN-2211",
    )


def test_an_operator_denies_and_the_workflow_fails_with_the_reason(jobs, lambda_context):
    approval_id = waiting_job(jobs)

    with task_calls() as sent:
        response = call(decision_event("deny", approval_id), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert body_of(response)["status"] == "denied"
    [(operation, params)] = sent
    assert operation == "SendTaskFailure"
    assert params["taskToken"] == TOKEN
    assert params["error"] == "ApprovalDenied"
    assert params["cause"] == "Instance approval denied by platform: ml.m5.xlarge is enough for this model"
    assert jobs.store.get(JOB_ID).details["approval"]["decision"] == "denied"


@pytest.mark.parametrize(("first", "second"), [("approve", "deny"), ("approve", "approve"), ("deny", "approve")])
def test_a_second_decision_is_a_409_and_changes_nothing(jobs, lambda_context, first, second):
    approval_id = waiting_job(jobs)
    assert call(decision_event(first, approval_id), lambda_context)["statusCode"] == 200
    decided = approvals().get(approval_id)
    evt = decision_event(second, approval_id, {"reason": "changed my mind"})

    with task_calls() as sent:
        error = assert_error(call(evt, lambda_context), evt, 409, "approval_closed")

    assert f"already {decided.status.value}" in error["message"]
    assert sent == []
    assert approvals().get(approval_id) == decided
    assert jobs.store.get(JOB_ID).details["approval"]["reason"] != "changed my mind"


@pytest.mark.parametrize("body", [None, "", "{}", {"reason": ""}, {"reason": "   "}])
def test_a_decision_without_a_reason_is_a_422_naming_body_reason(jobs, lambda_context, body):
    approval_id = waiting_job(jobs)
    evt = decision_event("approve", approval_id, body)

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body.reason"
    assert approvals().get(approval_id).status == ApprovalStatus.PENDING


def test_an_unknown_approval_is_a_404(jobs, lambda_context):
    evt = decision_event("approve", "apr-ffffffffffffffffffffffffffffffff")

    error = assert_error(call(evt, lambda_context), evt, 404, "approval_not_found")

    assert error["param"] == "id"


def test_an_expired_approval_cannot_be_approved_any_more(jobs, lambda_context):
    approval_id = waiting_job(jobs, expires_in=-1)
    evt = decision_event("approve", approval_id)

    with task_calls() as sent:
        error = assert_error(call(evt, lambda_context), evt, 409, "approval_closed")

    assert "already expired" in error["message"]
    assert sent == []
    assert approvals().get(approval_id).status == ApprovalStatus.EXPIRED


def test_cancelling_a_job_awaiting_approval_withdraws_its_approval(jobs, lambda_context):
    approval_id = waiting_job(jobs)
    cancel = event("job-cancel")

    response = call(cancel, lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert body_of(response)["status"] == "CANCELLED"
    assert approvals().get(approval_id).status == ApprovalStatus.WITHDRAWN
    assert body_of(call(event("approvals-list"), lambda_context))["data"] == []
    evt = decision_event("approve", approval_id)
    assert_error(call(evt, lambda_context), evt, 409, "approval_closed")


def test_another_tenant_cannot_cancel_a_job_awaiting_approval(jobs, lambda_context):
    approval_id = waiting_job(jobs)
    evt = as_caller(event("job-cancel"), "globex")

    assert_error(call(evt, lambda_context), evt, 404, "job_not_found")

    assert approvals().get(approval_id).status == ApprovalStatus.PENDING


def test_the_sample_events_are_an_operators(jobs, lambda_context):
    for name in ("approvals-list", "approval-approve", "approval-deny"):
        authorizer = event(name)["requestContext"]["authorizer"]
        assert authorizer["role"] == "operator", name
    assert as_operator(event("jobs-list"))["requestContext"]["authorizer"]["role"] == "operator"


@pytest.mark.parametrize("approval_id", ["x" * 3000, "apr-NOTHEX", "apr-" + "0" * 31])
def test_an_id_not_shaped_like_an_approval_is_a_404_not_a_500(jobs, lambda_context, approval_id):
    evt = decision_event("deny", approval_id)

    assert_error(call(evt, lambda_context), evt, 404, "approval_not_found")


def test_a_decision_step_functions_did_not_receive_can_be_made_again(jobs, lambda_context):
    from botocore.exceptions import ClientError

    from sluice import clients

    approval_id = waiting_job(jobs)
    client = clients.get("stepfunctions")

    def throttle(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "SendTaskSuccess")

    client.meta.events.register("before-call.sfn.SendTaskSuccess", throttle)
    try:
        evt = decision_event("approve", approval_id)
        assert_error(call(evt, lambda_context), evt, 429, "throttled")
    finally:
        client.meta.events.unregister("before-call.sfn.SendTaskSuccess", throttle)

    reopened = approvals().get(approval_id)
    assert (reopened.status, reopened.decided_by) == (ApprovalStatus.PENDING, None)
    assert "approval" not in jobs.store.get(JOB_ID).details
    assert call(decision_event("approve", approval_id), lambda_context)["statusCode"] == 200
