"""The endpoint's lock let go at every end of a deployment ("Release endpoint").

The lock row (DeploymentLocksTable, key endpoint_name) names its holder's job; only that holder's row is
deleted, so a late or repeated release never frees another deployment's endpoint.
"""

from __future__ import annotations

from typing import Any


def release_endpoint(dynamodb: Any, table: str, endpoint_name: str, job_id: str) -> bool:
    """True when this job held the endpoint and let it go; False when it did not hold it (any more)."""
    try:
        dynamodb.delete_item(
            TableName=table,
            Key={"endpoint_name": {"S": endpoint_name}},
            ConditionExpression="job_id = :job",
            ExpressionAttributeValues={":job": {"S": job_id}},
        )
    except dynamodb.exceptions.ConditionalCheckFailedException:
        return False
    return True
