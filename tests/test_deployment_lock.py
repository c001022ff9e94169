"""One deployment per endpoint: the locks table's conditional writes, and the takeover of a lock whose
holder job is final or gone."""

from __future__ import annotations

import pytest

from sluice.jobs.kinds.deployment.lock import EndpointLocks
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.jobs.store import JobStore
from tests.conftest import shared_client

LOCKS_TABLE = "sluice-test-deployment-locks"
JOBS_TABLE = "sluice-test-lock-jobs"
ENDPOINT = "sluice-iris"
FIRST, SECOND = "job-" + "1" * 32, "job-" + "2" * 32


def create_locks_table(dynamodb, name: str = LOCKS_TABLE) -> None:
    """As template.yaml's DeploymentLocksTable."""
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "endpoint_name", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "endpoint_name", "KeyType": "HASH"}],
    )


@pytest.fixture
def locks(aws) -> EndpointLocks:
    dynamodb = shared_client("dynamodb")
    create_locks_table(dynamodb)
    dynamodb.create_table(
        TableName=JOBS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
    )
    return EndpointLocks(dynamodb, LOCKS_TABLE, jobs=JobStore(dynamodb, JOBS_TABLE))


def deployment(locks: EndpointLocks, job_id: str, status: JobStatus = JobStatus.RUNNING) -> None:
    jobs = locks._jobs
    assert jobs is not None
    jobs.create(
        Job(job_id=job_id, caller="platform", kind=JobKind.DEPLOYMENT, model="iris", input_location="x", status=status)
    )


def test_a_free_endpoint_is_taken_and_a_second_deployment_is_told_who_holds_it(locks):
    deployment(locks, FIRST)

    assert locks.acquire(ENDPOINT, FIRST) is None
    assert locks.acquire(ENDPOINT, SECOND) == FIRST
    assert locks.holder(ENDPOINT) == FIRST
    # Another endpoint is another lock.
    assert locks.acquire("sluice-churn", SECOND) is None


def test_the_holder_taking_it_again_is_a_retried_submission_not_a_conflict(locks):
    deployment(locks, FIRST)

    assert locks.acquire(ENDPOINT, FIRST) is None
    assert locks.acquire(ENDPOINT, FIRST) is None
    assert locks.holder(ENDPOINT) == FIRST


def test_release_gives_the_lock_back_only_for_its_holder(locks):
    deployment(locks, FIRST)
    locks.acquire(ENDPOINT, FIRST)

    assert locks.release(ENDPOINT, SECOND) is False
    assert locks.holder(ENDPOINT) == FIRST
    assert locks.release(ENDPOINT, FIRST) is True
    assert locks.holder(ENDPOINT) is None
    assert locks.release(ENDPOINT, FIRST) is False
    assert locks.acquire(ENDPOINT, SECOND) is None


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.AWAITING_APPROVAL, JobStatus.RUNNING])
def test_an_unfinished_holder_keeps_its_lock(locks, status):
    deployment(locks, FIRST, status)
    locks.acquire(ENDPOINT, FIRST)

    assert locks.acquire(ENDPOINT, SECOND) == FIRST


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_lock_whose_holder_is_final_is_taken_over(locks, status):
    deployment(locks, FIRST)
    locks.acquire(ENDPOINT, FIRST)
    locks._jobs.transition(FIRST, status)  # ended without giving its lock back (a crash, say)

    assert locks.acquire(ENDPOINT, SECOND) is None
    assert locks.holder(ENDPOINT) == SECOND
    # The old holder's late release cannot free the new holder's lock.
    assert locks.release(ENDPOINT, FIRST) is False
    assert locks.holder(ENDPOINT) == SECOND


def test_a_lock_whose_holder_job_no_longer_exists_is_taken_over(locks):
    locks.acquire(ENDPOINT, FIRST)  # no job row: expired by TTL, or its creation failed unreleased

    assert locks.acquire(ENDPOINT, SECOND) is None
    assert locks.holder(ENDPOINT) == SECOND


def test_a_takeover_is_conditional_on_the_old_holder(locks, monkeypatch):
    """Two deployments taking over the same stale lock: the row changed between the read and the write,
    so the second sees the first's new (unfinished) holder."""
    third = "job-" + "3" * 32
    deployment(locks, FIRST, JobStatus.FAILED)
    deployment(locks, SECOND)
    locks.acquire(ENDPOINT, FIRST)
    real = locks._holder_is_done

    def racing(job_id: str) -> bool:
        done = real(job_id)
        if job_id == FIRST:
            # SECOND takes it over while THIRD is deciding.
            shared_client("dynamodb").put_item(
                TableName=LOCKS_TABLE, Item={"endpoint_name": {"S": ENDPOINT}, "job_id": {"S": SECOND}}
            )
        return done

    monkeypatch.setattr(locks, "_holder_is_done", racing)

    assert locks.acquire(ENDPOINT, third) == SECOND
    assert locks.holder(ENDPOINT) == SECOND
