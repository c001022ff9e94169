"""The job announcer: every transition into a final state announced exactly once, whoever caused it.

In-process under moto's decorator: the jobs table of tests/jobs_support.py has its stream, and
tests/announcer_support.py runs functions/job_announcer over the records written since the last run
(the workflow paths, the event source mapping's retries and its DLQ are in test_jobs_notifications.py
and the workflow tests, where local mode delivers the stream as Lambda does).
"""

from __future__ import annotations

import json

import pytest
from moto.sns.exceptions import SNSException

from sluice.jobs.kinds.async_inference.notifications import AsyncInferenceNotification, apply_notification
from sluice.jobs.models import Callback, Job, JobKind, JobStatus
from sluice.jobs.store import JobStore
from sluice.settings import get_settings
from tests.announcer_support import StreamFeed, run_announcer
from tests.conftest import shared_client
from tests.jobs_support import ACCOUNT, JOBS_TABLE, REGION

CALLER_TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:acme-results"


class Throttled(SNSException):
    code = "Throttled"
    message = "Rate exceeded"


class KmsThrottled(SNSException):
    code = "KMSThrottling"
    message = "The KMS key was throttled"


@pytest.fixture
def world(jobs, monkeypatch):
    """The job events topic and a caller topic, each read through an SQS subscription."""
    sns, sqs = shared_client("sns"), shared_client("sqs")
    inboxes = {}
    for name in ("sluice-test-job-events", "acme-results"):
        topic = sns.create_topic(Name=name)["TopicArn"]
        url = sqs.create_queue(QueueName=f"{name}-inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        inboxes[name] = url
    monkeypatch.setenv("SLUICE_JOB_EVENTS_TOPIC_ARN", f"arn:aws:sns:{REGION}:{ACCOUNT}:sluice-test-job-events")
    get_settings.cache_clear()
    from sluice.jobs import notify_sources

    notify_sources.reset()
    feed = StreamFeed(JOBS_TABLE)

    class World:
        store: JobStore = jobs.store

        def announce(self) -> list[str]:
            return run_announcer(feed.records(), monkeypatch)

        def published(self, inbox: str = "sluice-test-job-events") -> list[dict]:
            messages = []
            while batch := sqs.receive_message(QueueUrl=inboxes[inbox], MaxNumberOfMessages=10).get("Messages"):
                for message in batch:
                    messages.append(json.loads(json.loads(message["Body"])["Message"]))
                    sqs.delete_message(QueueUrl=inboxes[inbox], ReceiptHandle=message["ReceiptHandle"])
            return messages

        def pending(self, job_id: str) -> bool:
            item = shared_client("dynamodb").get_item(TableName=JOBS_TABLE, Key={"job_id": {"S": job_id}})["Item"]
            return "announce_pending" in item

    yield World()
    get_settings.cache_clear()


def new_job(store: JobStore, number: int, *, status: JobStatus = JobStatus.RUNNING, callback=None, **fields) -> Job:
    job = Job(
        job_id=f"job-{number:032x}",
        caller="acme",
        kind=JobKind.ASYNC,
        model="churn-async",
        status=status,
        input_location=f"s3://sluice-test-data/async/acme/job-{number:032x}/input",
        callback=callback,
        **fields,
    )
    return store.create(job)


@pytest.fixture
def failing_publish(monkeypatch):
    """SNS refuses publishes to chosen topics, one error per publish, as its throttling does."""
    from moto.sns.models import Topic

    errors: dict[str, list[Exception]] = {}
    original = Topic.publish

    def publish(topic, *args, **kwargs):
        if errors.get(topic.arn):
            raise errors[topic.arn].pop(0)
        return original(topic, *args, **kwargs)

    monkeypatch.setattr(Topic, "publish", publish)
    return errors


# ---------------------------------------------------------------------- each cause, once
def test_a_cancel_is_announced_once_with_the_jobs_public_view(world):
    job = new_job(world.store, 1)
    assert world.announce() == []
    assert world.published() == []  # created RUNNING: nothing final yet

    world.store.transition(job.job_id, JobStatus.CANCELLED, add_details={"cancelled_by": "acme"})
    assert world.announce() == []

    [event] = world.published()
    assert event["type"] == "sluice.job.finished"
    view = event["job"]
    assert (view["id"], view["object"], view["status"]) == (job.job_id, "job", "CANCELLED")
    assert view["links"] == {"self": f"/v1/jobs/{job.job_id}"}
    assert view["details"] == {"cancelled_by": "acme"}  # the announcer's own bookkeeping is not in it
    assert not world.pending(job.job_id)
    announced = world.store.get(job.job_id).details["announcement"]
    assert set(announced) == {"events", "done_at"}


def test_a_job_created_final_is_announced_once(world):
    """A rejected drop: sluice.jobs.kinds.batch_transform.drop records the job, then fails it before anything runs."""
    job = new_job(world.store, 2, status=JobStatus.FAILED, failure_reason="The dropped file could not be pinned.")
    assert world.pending(job.job_id)
    assert world.announce() == []

    [event] = world.published()
    assert event["job"]["status"] == "FAILED"
    assert event["job"]["failure_reason"] == "The dropped file could not be pinned."
    assert event["job"]["finished_at"]


def test_a_sagemaker_notification_is_announced_once_and_its_duplicate_not_again(world):
    job = new_job(world.store, 3, details={"endpoint_name": "sluice-churn-async"})
    note = AsyncInferenceNotification.model_validate(
        {
            "inferenceId": job.job_id,
            "invocationStatus": "Completed",
            "requestParameters": {"endpointName": "sluice-churn-async", "inputLocation": job.input_location},
            "responseParameters": {"outputLocation": "s3://sluice-test-data/async/acme/out"},
        }
    )
    assert apply_notification(world.store, note)[0] == "succeeded"
    assert apply_notification(world.store, note)[0] == "unchanged"
    assert world.announce() == []

    assert [event["job"]["status"] for event in world.published()] == ["SUCCEEDED"]


def test_notes_and_non_final_moves_are_never_announced(world):
    job = new_job(world.store, 4, status=JobStatus.QUEUED)
    world.store.transition(job.job_id, JobStatus.RUNNING)
    world.store.merge_details(job.job_id, transform_job_name="job-4-1")
    assert world.announce() == []
    assert world.published() == []
    world.store.transition(job.job_id, JobStatus.SUCCEEDED, output_location="s3://sluice-test-data/out/")
    world.store.merge_details(job.job_id, note="after the end")  # final -> final: not a transition
    assert world.announce() == []

    assert len(world.published()) == 1


def test_a_redelivered_record_is_not_announced_twice(world, monkeypatch):
    job = new_job(world.store, 5, callback=Callback(sns_topic_arn=CALLER_TOPIC))
    world.store.transition(job.job_id, JobStatus.SUCCEEDED)
    records = StreamFeed(JOBS_TABLE).records()

    # At-least-once: the same batch twice, and the same record twice in one batch.
    assert run_announcer(records, monkeypatch) == []
    assert run_announcer(records + records, monkeypatch) == []

    assert len(world.published()) == 1
    assert len(world.published("acme-results")) == 1
    assert world.store.get(job.job_id).details["notification"]["delivered"] is True


# ---------------------------------------------------------------------- retries after a partial failure
def test_a_callback_throttled_after_the_events_went_out_is_retried_alone(world, failing_publish):
    job = new_job(world.store, 6, callback=Callback(sns_topic_arn=CALLER_TOPIC))
    world.store.transition(job.job_id, JobStatus.SUCCEEDED)
    records = StreamFeed(JOBS_TABLE).records()
    # Throttled for every attempt of this delivery (botocore's own retries included), clear by the retry.
    failing_publish[CALLER_TOPIC] = [Throttled() for _ in range(10)]

    failed = world.announce()

    (transition,) = [r for r in records if r["eventName"] == "MODIFY"]
    assert failed == [transition["dynamodb"]["SequenceNumber"]]  # retried by the event source mapping
    assert len(world.published()) == 1
    assert world.published("acme-results") == []
    assert world.pending(job.job_id)
    assert "notification" not in world.store.get(job.job_id).details  # transient: not recorded as a refusal

    # The retry (the same records again) delivers only what is missing.
    from tests.announcer_support import run_announcer as retry

    failing_publish[CALLER_TOPIC] = []

    assert retry(records, pytest.MonkeyPatch()) == []
    assert world.published() == []
    assert len(world.published("acme-results")) == 1
    assert not world.pending(job.job_id)


@pytest.mark.parametrize("error", [Throttled, KmsThrottled], ids=["sns-throttling", "kms-throttling"])
def test_a_throttled_job_events_topic_fails_the_record_and_keeps_the_job_pending(world, failing_publish, error):
    job = new_job(world.store, 7)
    world.store.transition(job.job_id, JobStatus.FAILED, failure_reason="boom")
    records = StreamFeed(JOBS_TABLE).records()
    # Two deliveries of the record (SNS's own throttling codes are not among those botocore retries).
    failing_publish[get_settings().job_events_topic_arn] = [error(), error()]

    assert world.announce() != []
    assert run_announcer(records, pytest.MonkeyPatch()) != []
    assert world.published() == []
    assert world.pending(job.job_id)

    # Once the topic answers, the retry (or the reaper's backstop) announces it once.
    assert run_announcer(records, pytest.MonkeyPatch()) == []
    assert len(world.published()) == 1
    assert not world.pending(job.job_id)


def test_a_permanent_callback_refusal_is_recorded_and_completes_the_announcement(world):
    job = new_job(world.store, 8, callback=Callback(sns_topic_arn=f"arn:aws:sns:{REGION}:{ACCOUNT}:not-acmes"))
    world.store.transition(job.job_id, JobStatus.SUCCEEDED)

    assert world.announce() == []

    details = world.store.get(job.job_id).details
    assert details["notification"]["delivered"] is False
    assert details["announcement"]["callback"]["delivered"] is False
    assert not world.pending(job.job_id)


# ---------------------------------------------------------------------- the reaper's backstop
def test_pending_announcements_lists_final_jobs_not_yet_announced_and_announce_completes_them(world):
    from sluice.jobs.announcer import announce, pending_announcements

    done, waiting = new_job(world.store, 9), new_job(world.store, 10)
    world.store.transition(done.job_id, JobStatus.SUCCEEDED)
    world.announce()
    world.store.transition(waiting.job_id, JobStatus.FAILED, failure_reason="boom")
    world.published()

    assert [job.job_id for job in pending_announcements(0)] == [waiting.job_id]
    assert pending_announcements(3600) == []  # not old enough: the stream is still on it
    assert announce(world.store.get(waiting.job_id)) == "announced"
    assert announce(world.store.get(waiting.job_id)) == "already_announced"
    assert world.announce() == []  # the stream record arriving late changes nothing
    assert [event["job"]["id"] for event in world.published()] == [waiting.job_id]
    assert pending_announcements(0) == []


def test_a_held_announcement_is_left_to_its_holder(world):
    from sluice.jobs.announcement_marks import AnnouncementMarks
    from sluice.jobs.announcer import announce

    job = new_job(world.store, 11)
    world.store.transition(job.job_id, JobStatus.SUCCEEDED)
    marks = AnnouncementMarks(shared_client("dynamodb"), JOBS_TABLE)
    assert marks.claim(job.job_id, "the-stream", lease_seconds=60)[0] == "claimed"

    assert announce(job) == "busy"
    assert world.published() == []
    assert world.pending(job.job_id)  # still on the reaper's list should the holder die


def test_the_scheduled_backlog_run_announces_what_the_stream_could_not_once(world, monkeypatch, failing_publish):
    from sluice.settings import get_settings
    from tests.announcer_support import run_backlog

    monkeypatch.setenv("SLUICE_ANNOUNCER_BACKLOG_AFTER_SECONDS", "0")
    get_settings.cache_clear()
    job = new_job(world.store, 12)
    world.store.transition(job.job_id, JobStatus.SUCCEEDED)
    events_topic = get_settings().job_events_topic_arn
    # The stream's delivery fails (its retries ran out: the record is in the DLQ); the job stays pending.
    failing_publish[events_topic] = [Throttled() for _ in range(10)]
    assert world.announce() != []
    assert world.pending(job.job_id)

    # Still failing at the backlog run: counted, the job stays pending, and the run fails (Errors alarm).
    from sluice.jobs.announcer import BacklogIncomplete

    with pytest.raises(BacklogIncomplete):
        run_backlog(monkeypatch)
    assert world.pending(job.job_id)

    failing_publish[events_topic] = []
    assert run_backlog(monkeypatch) == {"announced": 1}
    assert run_backlog(monkeypatch) == {}
    assert [event["job"]["id"] for event in world.published()] == [job.job_id]
    assert not world.pending(job.job_id)


def test_the_callers_view_shows_what_was_announced_but_not_the_announcers_lease(world):
    from sluice.jobs.announcement_marks import AnnouncementMarks
    from sluice.jobs.views import JobView

    job = new_job(world.store, 13)
    world.store.transition(job.job_id, JobStatus.SUCCEEDED)
    marks = AnnouncementMarks(shared_client("dynamodb"), JOBS_TABLE)
    assert marks.claim(job.job_id, "held-by-someone", lease_seconds=60)[0] == "claimed"
    assert "claim" in world.store.get(job.job_id).details["announcement"]

    assert "claim" not in JobView.of(world.store.get(job.job_id)).details["announcement"]
    marks.release(job.job_id, "held-by-someone")
    world.announce()

    announcement = JobView.of(world.store.get(job.job_id)).details["announcement"]
    assert set(announcement) >= {"events", "done_at"}
    assert not {"claim", "claimed_until"} & set(announcement)
