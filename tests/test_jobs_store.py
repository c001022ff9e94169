"""Job records: exactly-once creation, caller isolation, forward-only status, paginated listing."""

from __future__ import annotations

import boto3
import pytest

from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.jobs.store import JobExists, JobStore

TABLE = "sluice-test-jobs"


@pytest.fixture
def store(aws) -> JobStore:
    dynamodb = boto3.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("job_id", "caller", "created_at")
        ],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "ByCaller",
                "KeySchema": [
                    {"AttributeName": "caller", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    return JobStore(dynamodb, TABLE, ttl_days=7)


def job(job_id: str, caller: str = "acme", kind: JobKind = JobKind.ASYNC, created_at: str | None = None) -> Job:
    extra = {"created_at": created_at} if created_at else {}
    return Job(job_id=job_id, caller=caller, kind=kind, model="iris", input_location="s3://b/k", **extra)


def test_a_job_is_created_once_and_expires(store):
    created = store.create(job("j1"))
    assert created.expires_at is not None
    with pytest.raises(JobExists):
        store.create(job("j1"))
    assert store.get("j1").status == JobStatus.QUEUED


def test_a_caller_never_sees_another_callers_job(store):
    store.create(job("j1", caller="acme"))
    assert store.get_for_caller("j1", "acme") is not None
    assert store.get_for_caller("j1", "globex") is None
    assert store.list_for_caller("globex") == ([], None)


def test_status_only_moves_forward_and_final_states_never_change(store):
    store.create(job("j1"))
    running = store.transition("j1", JobStatus.RUNNING, execution_id="exec-1")
    assert running.status == JobStatus.RUNNING
    assert running.started_at
    assert running.execution_id == "exec-1"
    done = store.transition("j1", JobStatus.SUCCEEDED, output_location="s3://b/out", details={"score": 0.97})
    assert done.status == JobStatus.SUCCEEDED
    assert done.finished_at
    assert done.details == {"score": 0.97}
    # A duplicate, a late RUNNING and a contradicting FAILED all change nothing.
    assert store.transition("j1", JobStatus.SUCCEEDED) is None
    assert store.transition("j1", JobStatus.RUNNING) is None
    assert store.transition("j1", JobStatus.FAILED, failure_reason="late error") is None
    assert store.get("j1").status == JobStatus.SUCCEEDED
    assert store.get("j1").failure_reason is None


def test_unknown_job_transition_changes_nothing(store):
    assert store.transition("nope", JobStatus.SUCCEEDED) is None
    assert store.get("nope") is None


def test_listing_is_newest_first_paginated_and_filtered(store):
    for i in range(5):
        store.create(job(f"a{i}", kind=JobKind.ASYNC, created_at=f"2026-11-23T10:00:0{i}.000+00:00"))
    store.create(job("b0", kind=JobKind.BATCH, created_at="2026-11-23T10:00:09.000+00:00"))
    store.create(job("other", caller="globex"))
    store.transition("a1", JobStatus.FAILED, failure_reason="x")

    first, token = store.list_for_caller("acme", limit=4)
    assert [j.job_id for j in first] == ["b0", "a4", "a3", "a2"]
    second, token = store.list_for_caller("acme", limit=4, next_token=token)
    assert [j.job_id for j in second] == ["a1", "a0"]
    assert token is None
    failed, _ = store.list_for_caller("acme", status=JobStatus.FAILED, limit=50)
    assert [j.job_id for j in failed] == ["a1"]
    batch, _ = store.list_for_caller("acme", kind=JobKind.BATCH, limit=50)
    assert [j.job_id for j in batch] == ["b0"]


def test_a_page_token_is_bound_to_its_caller(store):
    for i in range(3):
        store.create(job(f"a{i}", created_at=f"2026-11-23T10:00:0{i}.000+00:00"))
    _, token = store.list_for_caller("acme", limit=1)
    with pytest.raises(ValueError, match="caller"):
        store.list_for_caller("globex", next_token=token)
    with pytest.raises(ValueError, match="not valid"):
        store.list_for_caller("acme", next_token="%%%")
