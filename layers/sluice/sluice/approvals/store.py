"""Approval records in DynamoDB: written pending by a workflow, closed exactly once.

Pending requests are listed through the ByStatus index (status, requested_at), which projects
everything but the task token.
"""

from __future__ import annotations

import time
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from sluice.approvals.models import Approval, ApprovalStatus

BY_STATUS_INDEX = "ByStatus"
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _item(approval: Approval) -> dict[str, Any]:
    data = approval.model_dump(mode="json", exclude_none=True)
    return {key: _serializer.serialize(value) for key, value in data.items()}


def _approval(item: dict[str, Any]) -> Approval:
    data = {key: _deserializer.deserialize(value) for key, value in item.items()}
    for number in ("instance_count", "purge_at"):
        if number in data:
            data[number] = int(data[number])
    return Approval.model_validate(data)


class ApprovalStore:
    def __init__(self, dynamodb: Any, table: str, ttl_days: int = 30) -> None:
        self.dynamodb = dynamodb
        self.table = table
        self.ttl_days = ttl_days

    def put_pending(self, approval: Approval) -> bool:
        """Write a pending request; a retried request step replaces its own pending row (new token).
        False when the approval was already closed (decided, expired or withdrawn)."""
        if approval.purge_at is None:
            approval = approval.model_copy(update={"purge_at": int(time.time()) + self.ttl_days * 86400})
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=_item(approval.model_copy(update={"status": ApprovalStatus.PENDING})),
                ConditionExpression="attribute_not_exists(approval_id) OR #status = :pending",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":pending": {"S": ApprovalStatus.PENDING.value}},
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, approval_id: str) -> Approval | None:
        item = self.dynamodb.get_item(
            TableName=self.table, Key={"approval_id": {"S": approval_id}}, ConsistentRead=True
        ).get("Item")
        return _approval(item) if item else None

    def list_pending(self, now: str, limit: int = 100) -> list[Approval]:
        """Oldest first; requests whose wait has expired are left out (nobody can decide them any more)."""
        params: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": BY_STATUS_INDEX,
            "KeyConditionExpression": "#status = :pending",
            "FilterExpression": "expires_at > :now",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {":pending": {"S": ApprovalStatus.PENDING.value}, ":now": {"S": now}},
        }
        found: list[Approval] = []
        while len(found) < limit:
            page = self.dynamodb.query(**params)
            found.extend(_approval(item) for item in page.get("Items", []))
            if not page.get("LastEvaluatedKey"):
                break
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    def reopen(self, approval_id: str, from_status: ApprovalStatus) -> bool:
        """Undo a decision the workflow never received (Step Functions failed): pending again, retryable."""
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"approval_id": {"S": approval_id}},
                UpdateExpression="SET #status = :pending REMOVE decided_by, decided_at, reason",
                ConditionExpression="#status = :from",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":pending": {"S": ApprovalStatus.PENDING.value},
                    ":from": {"S": from_status.value},
                },
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def close(
        self, approval_id: str, status: ApprovalStatus, *, by: str, at: str, reason: str, from_status: ApprovalStatus
    ) -> Approval | None:
        """Move `from_status` -> `status` with who, when and why; None when it was not in `from_status`
        (a second decision, or one that lost a race): the conditional write makes it happen once."""
        try:
            answer = self.dynamodb.update_item(
                TableName=self.table,
                Key={"approval_id": {"S": approval_id}},
                UpdateExpression="SET #status = :to, decided_by = :by, decided_at = :at, reason = :reason",
                ConditionExpression="attribute_exists(approval_id) AND #status = :from",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":to": {"S": status.value},
                    ":from": {"S": from_status.value},
                    ":by": {"S": by},
                    ":at": {"S": at},
                    ":reason": {"S": reason},
                },
                ReturnValues="ALL_NEW",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return None
        return _approval(answer["Attributes"])
