"""One deployment per endpoint at a time: a row per endpoint (the locks table) naming the job that holds it.

Taking and giving back a lock are conditional writes, so two deployments racing for one endpoint cannot
both win. The workflow gives its lock back on every ending path, and the reaper when it finds a
workflow gone; should both miss (a crash between the job's final write and the release), a lock whose
holder job is final, or no longer exists, counts as free: the next deployment takes it over, on the
condition that the row still names that old holder (so two takeovers cannot both win either).
"""

from __future__ import annotations

from typing import Any

from sluice.jobs.models import utc_now
from sluice.jobs.store import JobStore

# Attempts at taking a lock that changes under our feet (released or taken over between two reads).
_ATTEMPTS = 3


class EndpointLocks:
    def __init__(self, dynamodb: Any, table: str, *, jobs: JobStore | None = None) -> None:
        self.dynamodb = dynamodb
        self.table = table
        # Where a holder's status is read (the takeover rule); the stack's jobs table by default.
        self._jobs = jobs

    def acquire(self, endpoint: str, job_id: str) -> str | None:
        """None: `job_id` holds the endpoint now (it may have held it already: a retried submission).
        Otherwise the id of the unfinished job that holds it."""
        for _ in range(_ATTEMPTS):
            if self._put(endpoint, job_id, condition="attribute_not_exists(endpoint_name) OR job_id = :job"):
                return None
            holder = self.holder(endpoint)
            if holder is None:
                continue  # released meanwhile: try again
            if not self._holder_is_done(holder):
                return holder
            if self._put(endpoint, job_id, condition="job_id = :old", old=holder):
                return None
        # Still moving after every attempt: somebody else is taking it right now.
        return self.holder(endpoint) or ""

    def release(self, endpoint: str, job_id: str) -> bool:
        """Gives the lock back if `job_id` holds it; False when it does not (never held, or taken over)."""
        try:
            self.dynamodb.delete_item(
                TableName=self.table,
                Key={"endpoint_name": {"S": endpoint}},
                ConditionExpression="job_id = :job",
                ExpressionAttributeValues={":job": {"S": job_id}},
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def holder(self, endpoint: str) -> str | None:
        item = self.dynamodb.get_item(
            TableName=self.table, Key={"endpoint_name": {"S": endpoint}}, ConsistentRead=True
        ).get("Item")
        return item["job_id"]["S"] if item else None

    def _put(self, endpoint: str, job_id: str, *, condition: str, old: str | None = None) -> bool:
        values = {":job": {"S": job_id}} if ":job" in condition else {}
        if old is not None:
            values[":old"] = {"S": old}
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item={
                    "endpoint_name": {"S": endpoint},
                    "job_id": {"S": job_id},
                    "acquired_at": {"S": utc_now()},
                },
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _holder_is_done(self, job_id: str) -> bool:
        if self._jobs is None:
            from sluice.jobs import services

            self._jobs = services.store()
        job = self._jobs.get(job_id)
        return job is None or job.status.terminal


def endpoint_locks() -> EndpointLocks:
    """The stack's locks table (settings.deployment_locks_table)."""
    from sluice import clients
    from sluice.settings import get_settings

    return EndpointLocks(clients.get("dynamodb"), get_settings().deployment_locks_table)
