"""Test setup shared by the auth tests: the API key table as template.yaml defines it."""

from __future__ import annotations

import os

from sluice.auth import keys

TABLE = os.environ["SLUICE_API_KEYS_TABLE"]


def create_keys_table(dynamodb, name: str = TABLE) -> None:
    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "key_hash", "AttributeType": "S"},
            {"AttributeName": "key_id", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "key_hash", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": keys.KEY_ID_INDEX,
                "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
