"""A job's announcement progress, kept on its row: who is announcing it, which channels are done.

The outbox marker `announce_pending` is set by the write that makes the job final (JobStore.transition,
JobStore.create) and removed here once every channel is done. In between, `details.announcement` says
what already went out, so a redelivered stream record, a retry after a partial failure or the backlog
run never sends a channel twice:

    details.announcement = {"events": {"message_id", "at"}, "callback": {"delivered", "at"},
                            "claim": <token>, "claimed_until": <epoch s>, "done_at": <iso>}

The claim is a lease: one announcer at a time per job (the stream's and the backlog run's may meet); a
holder that dies leaves it to expire, and the marker keeps the job on the backlog's list meanwhile.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from boto3.dynamodb.types import TypeSerializer

from sluice.jobs.models import Job, utc_now
from sluice.jobs.store import ANNOUNCE_PENDING, PENDING, PENDING_ANNOUNCEMENTS_INDEX, _job

Channel = Literal["events", "callback"]
ClaimOutcome = Literal["claimed", "done", "busy", "unknown_job"]
_serializer = TypeSerializer()
# Attribute names used in every expression here.
_NAMES = {
    "#pending": ANNOUNCE_PENDING,
    "#details": "details",
    "#announcement": "announcement",
    "#claim": "claim",
    "#until": "claimed_until",
}


class AnnouncementMarks:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb
        self.table = table

    def claim(self, job_id: str, token: str, lease_seconds: int) -> tuple[ClaimOutcome, Job | None]:
        """Take the job's announcement for `lease_seconds`; ("claimed", the job with its progress) or why not."""
        for _ in range(2):  # a second look when the row changed between the read and the conditional write
            item = self.dynamodb.get_item(TableName=self.table, Key=_key(job_id), ConsistentRead=True).get("Item")
            if item is None:
                return "unknown_job", None
            if ANNOUNCE_PENDING not in item:
                return "done", None
            now = int(time.time())
            progress = item.get("details", {}).get("M", {}).get("announcement", {}).get("M")
            if progress is not None and int(progress.get("claimed_until", {}).get("N", "0")) >= now:
                return "busy", None
            claimed = self._take(job_id, token, now, lease_seconds, has_progress=progress is not None)
            if claimed is not None:
                return "claimed", claimed
        return "busy", None

    def _take(self, job_id: str, token: str, now: int, lease_seconds: int, *, has_progress: bool) -> Job | None:
        values = {":token": {"S": token}, ":until": {"N": str(now + lease_seconds)}, ":now": {"N": str(now)}}
        if has_progress:
            update = "SET #details.#announcement.#claim = :token, #details.#announcement.#until = :until"
            condition = (
                "attribute_exists(#pending) AND attribute_exists(#details.#announcement) AND "
                "(attribute_not_exists(#details.#announcement.#until) OR #details.#announcement.#until < :now)"
            )
        else:
            # The first claim creates the progress map (a nested SET needs its parent to exist).
            update = "SET #details.#announcement = :fresh"
            condition = "attribute_exists(#pending) AND attribute_not_exists(#details.#announcement)"
            values = {":fresh": _serializer.serialize({"claim": token, "claimed_until": now + lease_seconds})}
        names = {name: value for name, value in _NAMES.items() if name in update or name in condition}
        try:
            answer = self.dynamodb.update_item(
                TableName=self.table,
                Key=_key(job_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={k: v for k, v in values.items() if k in update or k in condition},
                ReturnValues="ALL_NEW",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return None
        return _job(answer["Attributes"])

    def record(self, job_id: str, token: str, channel: Channel, outcome: dict[str, Any]) -> bool:
        """Note a channel as done, once (False: already noted, or the claim was lost)."""
        return self._update(
            job_id,
            "SET #details.#announcement.#channel = :outcome",
            "attribute_not_exists(#details.#announcement.#channel) AND #details.#announcement.#claim = :token",
            {"#channel": channel},
            {":outcome": _serializer.serialize(outcome), ":token": {"S": token}},
        )

    def finish(self, job_id: str, token: str) -> bool:
        """Every channel done: the marker goes (the job leaves the backlog's list) with the claim."""
        return self._update(
            job_id,
            "REMOVE #pending, #details.#announcement.#claim, #details.#announcement.#until "
            "SET #details.#announcement.#done = :now",
            "#details.#announcement.#claim = :token",
            {"#done": "done_at"},
            {":now": {"S": utc_now()}, ":token": {"S": token}},
        )

    def release(self, job_id: str, token: str) -> bool:
        """Give the claim back after a failure, so the retry need not wait for the lease to run out."""
        return self._update(
            job_id,
            "REMOVE #details.#announcement.#claim, #details.#announcement.#until",
            "#details.#announcement.#claim = :token",
            {},
            {":token": {"S": token}},
        )

    def pending(self, older_than_seconds: float, limit: int | None = None) -> list[str]:
        """Ids of jobs final for longer than this whose announcement has not completed, oldest first."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=older_than_seconds)).isoformat(timespec="milliseconds")
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": PENDING_ANNOUNCEMENTS_INDEX,
            "KeyConditionExpression": "#pending = :pending AND #finished < :cutoff",
            "ExpressionAttributeNames": {"#pending": ANNOUNCE_PENDING, "#finished": "finished_at"},
            "ExpressionAttributeValues": {":pending": {"S": PENDING}, ":cutoff": {"S": cutoff}},
        }
        found: list[str] = []
        while True:
            page = self.dynamodb.query(**params)
            found += [item["job_id"]["S"] for item in page.get("Items", [])]
            if limit is not None and len(found) >= limit:
                return found[:limit]
            if not page.get("LastEvaluatedKey"):
                return found
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _update(self, job_id: str, update: str, condition: str, names: dict[str, str], values: dict[str, Any]) -> bool:
        all_names = {**_NAMES, **names}
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=_key(job_id),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in all_names.items() if k in update or k in condition},
                ExpressionAttributeValues=values,
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True


def _key(job_id: str) -> dict[str, Any]:
    return {"job_id": {"S": job_id}}
