"""Job records in DynamoDB: created once, read only by their caller, moved forward only.

Every status change is a conditional write on the current status, so duplicate, late or
out-of-order events (SNS redeliveries, a retried task) change nothing once a job moved on.
"""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal
from enum import Enum
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sluice.jobs.models import ALLOWED_TRANSITIONS, Job, JobKind, JobStatus, utc_now

BY_CALLER_INDEX = "ByCaller"
# The outbox marker (sluice.jobs.announcement_marks): set by the same write that makes a job final,
# removed once its announcement is complete. A sparse index over it is the announcer's backlog list.
ANNOUNCE_PENDING = "announce_pending"
PENDING_ANNOUNCEMENTS_INDEX = "PendingAnnouncements"
PENDING = "PENDING"
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class JobExists(Exception):
    """A job with this id already exists (creation is exactly-once)."""


def _dynamo(value: Any) -> Any:
    """JSON-shaped data as DynamoDB wants it: numbers as Decimal."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda d: int(d) if d == d.to_integral_value() else float(d)))


def _item(job: Job) -> dict[str, Any]:
    data = _dynamo(job.model_dump(mode="json", exclude_none=True))
    return {key: _serializer.serialize(value) for key, value in data.items()}


def _job(item: dict[str, Any]) -> Job:
    return Job.model_validate(_from_dynamo({key: _deserializer.deserialize(value) for key, value in item.items()}))


class JobStore:
    def __init__(self, dynamodb: Any, table: str, ttl_days: int = 30) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.ttl_days = ttl_days

    def create(self, job: Job) -> Job:
        if job.expires_at is None:
            job = job.model_copy(update={"expires_at": int(time.time()) + self.ttl_days * 86400})
        if job.status.terminal and job.finished_at is None:
            job = job.model_copy(update={"finished_at": job.updated_at})
        item = _item(job)
        if job.status.terminal:
            # Created final (a rejected drop): announced like any other final transition.
            item[ANNOUNCE_PENDING] = {"S": PENDING}
        try:
            self.dynamodb.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(job_id)")
        except self.dynamodb.exceptions.ConditionalCheckFailedException as exc:
            raise JobExists(job.job_id) from exc
        return job

    def get(self, job_id: str) -> Job | None:
        item = self.dynamodb.get_item(TableName=self.table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        return _job(item["Item"]) if "Item" in item else None

    def get_for_caller(self, job_id: str, caller: str) -> Job | None:
        """None for another caller's job too: a caller cannot even learn that it exists."""
        job = self.get(job_id)
        return job if job is not None and job.caller == caller else None

    def list_for_caller(
        self,
        caller: str,
        *,
        status: JobStatus | None = None,
        kind: JobKind | None = None,
        limit: int = 20,
        next_token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """Newest first. Filters apply within a page, so a page may hold fewer than `limit` jobs."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_CALLER_INDEX,
            "KeyConditionExpression": "#caller = :caller",
            "ExpressionAttributeNames": {"#caller": "caller"},
            "ExpressionAttributeValues": {":caller": {"S": caller}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        filters = []
        if status is not None:
            filters.append("#status = :status")
            params["ExpressionAttributeNames"]["#status"] = "status"
            params["ExpressionAttributeValues"][":status"] = {"S": status.value}
        if kind is not None:
            filters.append("#kind = :kind")
            params["ExpressionAttributeNames"]["#kind"] = "kind"
            params["ExpressionAttributeValues"][":kind"] = {"S": kind.value}
        if filters:
            params["FilterExpression"] = " AND ".join(filters)
        if next_token:
            start = decode_token(next_token)
            if start.get("caller", {}).get("S") != caller:
                raise ValueError("next_token does not belong to this caller")
            params["ExclusiveStartKey"] = start
        page = self.dynamodb.query(**params)
        token = encode_token(page["LastEvaluatedKey"]) if page.get("LastEvaluatedKey") else None
        return [_job(item) for item in page.get("Items", [])], token

    def transition(
        self, job_id: str, to: JobStatus, *, add_details: dict[str, Any] | None = None, **fields: Any
    ) -> Job | None:
        """Move a job to `to` if its current status allows it; returns the updated job, or None
        when nothing changed (unknown job, already final, or a move backwards).

        `add_details` sets keys inside `details` and keeps the others (a `details=` field replaces it)."""
        allowed_from = [status for status, targets in ALLOWED_TRANSITIONS.items() if to in targets]
        now = utc_now()
        values: dict[str, Any] = {"status": to.value, "updated_at": now, **fields}
        if to == JobStatus.RUNNING:
            values.setdefault("started_at", now)
        if to.terminal:
            values.setdefault("finished_at", now)
            values.setdefault("expires_at", int(time.time()) + self.ttl_days * 86400)
            # The outbox marker, in the same conditional write: a final job is never left unannounced.
            values[ANNOUNCE_PENDING] = PENDING
        names = {f"#{name}": name for name in values}
        expression_values = {f":{name}": _serializer.serialize(_plain(value)) for name, value in values.items()}
        assignments = [f"#{name} = :{name}" for name in values]
        assignments += _detail_assignments(add_details or {}, names, expression_values)
        condition = "attribute_exists(job_id) AND " + _status_in(allowed_from, names, expression_values)
        return self._update_if(job_id, assignments, condition, names, expression_values)

    def update_details(self, job_id: str, **details: Any) -> None:
        """Record facts (execution id, transform job name) without touching the status."""
        values = {"updated_at": utc_now(), **details}
        self.dynamodb.update_item(
            TableName=self.table,
            Key={"job_id": {"S": job_id}},
            UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in values),
            ConditionExpression="attribute_exists(job_id)",
            ExpressionAttributeNames={f"#{name}": name for name in values},
            ExpressionAttributeValues={f":{name}": _serializer.serialize(_plain(v)) for name, v in values.items()},
        )

    def merge_details(self, job_id: str, **details: Any) -> bool:
        """Set keys inside a job's `details` (notes such as a callback's delivery), keeping the others
        and the status; False for an unknown job."""
        names: dict[str, str] = {"#updated_at": "updated_at"}
        values: dict[str, Any] = {":updated_at": _serializer.serialize(utc_now())}
        assignments = ["#updated_at = :updated_at", *_detail_assignments(details, names, values)]
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET " + ", ".join(assignments),
                ConditionExpression="attribute_exists(job_id)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim(
        self, job_id: str, *, statuses: tuple[JobStatus, ...], unset: str | None = None, **details: Any
    ) -> Job | None:
        """Set keys inside `details` only while the job is in one of `statuses` (and, with `unset`, only
        while details.<unset> is not set yet): the job as updated, or None when the condition failed.

        A step that must not run twice, or not after a cancel, claims its turn this way first."""
        names: dict[str, str] = {"#updated_at": "updated_at"}
        values: dict[str, Any] = {":updated_at": _serializer.serialize(utc_now())}
        assignments = ["#updated_at = :updated_at", *_detail_assignments(details, names, values)]
        condition = "attribute_exists(job_id) AND " + _status_in(statuses, names, values)
        if unset is not None:
            names["#details"], names["#unset"] = "details", unset
            condition += " AND attribute_not_exists(#details.#unset)"
        return self._update_if(job_id, assignments, condition, names, values)

    def _update_if(
        self, job_id: str, assignments: list[str], condition: str, names: dict[str, str], values: dict[str, Any]
    ) -> Job | None:
        """One conditional SET; the job as updated, or None when the condition did not hold."""
        try:
            answer = self.dynamodb.update_item(
                TableName=self.table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET " + ", ".join(assignments),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return None
        return _job(answer["Attributes"])


def _status_in(statuses: Any, names: dict[str, str], values: dict[str, Any]) -> str:
    """`#status IN (...)` over these statuses, its names and values added."""
    names["#status"] = "status"
    values.update({f":status_in{i}": {"S": status.value} for i, status in enumerate(statuses)})
    return "#status IN (" + ", ".join(f":status_in{i}" for i in range(len(statuses))) + ")"


def _detail_assignments(details: dict[str, Any], names: dict[str, str], values: dict[str, Any]) -> list[str]:
    """`details.<key> = value` for each key (the details map exists on every created job)."""
    if not details:
        return []
    names["#details"] = "details"
    assignments = []
    for index, (key, value) in enumerate(details.items()):
        names[f"#detail{index}"] = key
        values[f":detail{index}"] = _serializer.serialize(_plain(value))
        assignments.append(f"#details.#detail{index} = :detail{index}")
    return assignments


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_none=True)
    elif isinstance(value, Enum):
        value = value.value
    return _dynamo(value)


def encode_token(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode()


def decode_token(token: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("next_token is not valid") from exc
    if not isinstance(decoded, dict):
        raise ValueError("next_token is not valid")
    return decoded
