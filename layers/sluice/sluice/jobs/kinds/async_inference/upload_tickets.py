"""Open upload tickets per caller: a presigned PUT is a promise of storage, so it is counted.

One row per ticket in the upload tickets table (caller, upload_id), expiring (DynamoDB TTL) when its
URL does. A ticket is open until it expires or a job uses its upload. The count is a query on the
ByExpiry index (caller, expires_at > now), so it reads only open tickets, never expired rows that
TTL has not deleted yet. Two requests racing past the check may both get a ticket: the cap can be
exceeded by the number of concurrent requests of one caller, never more, which is enough to stop a
loop from filling the bucket.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

BY_EXPIRY_INDEX = "ByExpiry"


@dataclass(frozen=True)
class OpenTickets:
    count: int
    # Unix time at which the oldest open ticket expires (frees a slot); None when none is open.
    first_expiry: int | None


class UploadTickets:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self.dynamodb = dynamodb
        self.table = table

    def open_for(self, caller: str, *, now: float | None = None) -> OpenTickets:
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_EXPIRY_INDEX,
            "KeyConditionExpression": "#caller = :caller AND expires_at > :now",
            "ExpressionAttributeNames": {"#caller": "caller"},
            "ExpressionAttributeValues": {
                ":caller": {"S": caller},
                ":now": {"N": str(int(now if now is not None else time.time()))},
            },
            "ProjectionExpression": "expires_at",
            "ScanIndexForward": True,
        }
        count, first = 0, None
        while True:
            page = self.dynamodb.query(**params)
            items = page.get("Items", [])
            if items and first is None:
                first = int(items[0]["expires_at"]["N"])
            count += len(items)
            if not page.get("LastEvaluatedKey"):
                return OpenTickets(count, first)
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record(self, caller: str, upload_id: str, *, model: str, size_bytes: int, expires_at: int) -> None:
        self.dynamodb.put_item(
            TableName=self.table,
            Item={
                "caller": {"S": caller},
                "upload_id": {"S": upload_id},
                "model": {"S": model},
                "size_bytes": {"N": str(size_bytes)},
                "expires_at": {"N": str(expires_at)},
            },
        )

    def consume(self, caller: str, upload_id: str) -> None:
        """The upload is now a job's input: its ticket no longer holds a slot (idempotent)."""
        self.dynamodb.delete_item(TableName=self.table, Key={"caller": {"S": caller}, "upload_id": {"S": upload_id}})


def upload_tickets() -> UploadTickets:
    """The stack's upload tickets table."""
    from sluice import clients
    from sluice.settings import get_settings

    return UploadTickets(clients.get("dynamodb"), get_settings().upload_tickets_table)
