"""One announcer for every job kind: each transition into a final state is announced exactly once.

Driven by the change itself (the jobs table's stream), whoever made it: a workflow, a cancel, a
rejected drop, a SageMaker notification, the reaper. Announcing is publishing the job's public view
to the job events topic and delivering the caller's callback (sluice.jobs.notify). A failure that may
clear up raises, so the stream record is retried by the event source mapping and in the end parked
in its DLQ; the job keeps its outbox marker until then, and the function's scheduled backlog run
(`announce_backlog`) announces what `pending_announcements` lists. Progress is recorded per channel
(sluice.jobs.announcement_marks), so repeats never send a channel twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sluice.jobs.announcement_marks import AnnouncementMarks
from sluice.jobs.models import TERMINAL, Job, utc_now
from sluice.jobs.notify import SecretSource, TopicSource, deliver_callback, publish_job_event, record_delivery
from sluice.jobs.store import JobStore
from sluice.settings import Settings
from sluice.telemetry import logger

Outcome = Literal["announced", "already_announced", "busy", "not_final", "unknown_job"]
_FINAL = frozenset(status.value for status in TERMINAL)


@dataclass(frozen=True)
class Channels:
    """What announcing needs from AWS: the job events topic's SNS client, an SNS client per region
    for callers' topics, each caller's webhook secret and allowed callback topics (sluice.jobs.notify_sources)."""

    sns: Any
    sns_client: Callable[[str], Any]
    webhook_secret: SecretSource
    callback_topics: TopicSource


def _status(image: dict[str, Any] | None) -> str | None:
    return ((image or {}).get("status") or {}).get("S")


def is_final_transition(
    event_name: str | None, old_image: dict[str, Any] | None, new_image: dict[str, Any] | None
) -> bool:
    """A row that became final with this change: inserted final, or moved from a non-final status.

    The event source mapping's filter says the same; this is the rule (local mode and tests have no filter)."""
    if _status(new_image) not in _FINAL:
        return False
    if event_name == "INSERT":
        return True
    return event_name == "MODIFY" and _status(old_image) not in _FINAL


class Announcer:
    def __init__(self, store: JobStore, settings: Settings, channels: Channels) -> None:
        self.store = store
        self.marks = AnnouncementMarks(store.dynamodb, store.table)
        self.settings = settings
        self.channels = channels

    def announce_change(self, record: dict[str, Any]) -> Outcome:
        """One DynamoDB stream record (NEW_AND_OLD_IMAGES), as Lambda hands it over."""
        change = record.get("dynamodb") or {}
        if not is_final_transition(record.get("eventName"), change.get("OldImage"), change.get("NewImage")):
            return "not_final"
        job_id = ((change.get("Keys") or {}).get("job_id") or {}).get("S", "")
        return self.announce_id(job_id)

    def announce(self, job: Job) -> Outcome:
        """Announce a final job unless that already happened (the backlog run's entry point)."""
        return self.announce_id(job.job_id)

    def announce_id(self, job_id: str) -> Outcome:
        token = uuid.uuid4().hex
        claim, job = self.marks.claim(job_id, token, self.settings.announcement_lease_seconds)
        if claim == "done":
            return "already_announced"
        if claim == "busy":
            # Another announcer holds it; if that one dies, the marker keeps the job on the backlog's list.
            logger.info("announcement in progress elsewhere", extra={"job_id": job_id})
            return "busy"
        if job is None:
            logger.warning("announcement for a job without a record skipped", extra={"job_id": job_id})
            return "unknown_job"
        if job.status not in TERMINAL:
            # Only a final job carries the marker; a row edited by hand could break that.
            self.marks.release(job_id, token)
            return "not_final"
        try:
            self._send(job, token)
        except BaseException:
            self.marks.release(job_id, token)
            raise
        self.marks.finish(job_id, token)
        logger.info("job announced", extra={"job_id": job_id, "status": job.status.value})
        return "announced"

    def _send(self, job: Job, token: str) -> None:
        progress = job.details.get("announcement") or {}
        if "events" not in progress:
            message_id = publish_job_event(self.channels.sns, self.settings.job_events_topic_arn, job)
            self.marks.record(job.job_id, token, "events", {"message_id": message_id, "at": utc_now()})
        if "callback" in progress:
            return
        delivery = deliver_callback(
            job,
            self.settings,
            sns_client=self.channels.sns_client,
            webhook_secret=self.channels.webhook_secret,
            callback_topics=self.channels.callback_topics,
        )
        if delivery is None:
            return
        # As before the announcer: what happened to the callback is on the job for its caller to read.
        record_delivery(self.store, job.job_id, delivery)
        self.marks.record(job.job_id, token, "callback", {"delivered": delivery.delivered, "at": utc_now()})
        logger.info("callback outcome", extra={"job_id": job.job_id, **delivery.model_dump(exclude_none=True)})

    def pending_announcements(self, older_than_seconds: float, limit: int | None = None) -> list[Job]:
        """Final jobs whose announcement has not completed for this long (the stream's retries ran out,
        or its record sits in the DLQ): the backlog run announces each with `announce`."""
        jobs = (self.store.get(job_id) for job_id in self.marks.pending(older_than_seconds, limit))
        return [job for job in jobs if job is not None]


class BacklogIncomplete(Exception):
    """Some pending announcements failed again; they stay pending for the next run (the Errors alarm sees it)."""


def announce_backlog(announcer: Announcer, older_than_seconds: float, limit: int) -> dict[str, int]:
    """The scheduled backstop: every final job still unannounced `older_than_seconds` after it finished
    (its stream record ran out of retries and was parked in the DLQ) is announced, once, like the stream
    would have. One job failing again does not stop the others; it stays pending for the next run."""
    counts: dict[str, int] = {}
    for job in announcer.pending_announcements(older_than_seconds, limit):
        try:
            outcome: str = announcer.announce(job)
        except Exception as error:  # noqa: BLE001 - counted and raised below, after the other jobs
            logger.warning("backlog announcement failed again", extra={"job_id": job.job_id, "error": str(error)})
            outcome = "failed"
        counts[outcome] = counts.get(outcome, 0) + 1
    logger.info("announcement backlog run", extra={"outcomes": counts})
    if counts.get("failed"):
        raise BacklogIncomplete(f"{counts['failed']} pending announcements failed again: {counts}")
    return counts


def default_announcer() -> Announcer:
    """The announcer on this container's clients and settings (the announcer function's)."""
    from sluice import clients
    from sluice.jobs import notify_sources, services
    from sluice.settings import get_settings

    store = services.store()
    channels = Channels(
        sns=clients.get("sns"),
        sns_client=notify_sources.sns_in,
        webhook_secret=notify_sources.webhook_secret,
        callback_topics=notify_sources.callback_topics,
    )
    return Announcer(store, get_settings(), channels)


def pending_announcements(older_than_seconds: float, limit: int | None = None) -> list[Job]:
    """The backstop's list: final jobs not announced for `older_than_seconds`."""
    return default_announcer().pending_announcements(older_than_seconds, limit)


def announce(job: Job) -> Outcome:
    """Announce a final job once (a no-op when its announcement already completed)."""
    return default_announcer().announce(job)
