"""The job announcer over the jobs table's stream, in-process under moto's decorator (no delivery thread).

moto keeps a table's stream records for the DynamoDB Streams API; `StreamFeed` reads them from where it
left off and hands them, as Lambda would (epoch creation times), to functions/job_announcer. Unfiltered:
the announcer decides itself which records are final transitions (the mapping's filter only saves calls).
"""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import load_handler, shared_client


class StreamFeed:
    def __init__(self, table: str) -> None:
        self.streams = shared_client("dynamodbstreams")
        self.arn = shared_client("dynamodb").describe_table(TableName=table)["Table"]["LatestStreamArn"]
        self.after: str | None = None

    def records(self) -> list[dict[str, Any]]:
        """The records written since the last call, in stream order."""
        shard = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"][0]["ShardId"]
        position = {"ShardIteratorType": "TRIM_HORIZON"}
        if self.after is not None:
            position = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": self.after}
        iterator = self.streams.get_shard_iterator(StreamArn=self.arn, ShardId=shard, **position)["ShardIterator"]
        records = []
        while iterator:
            page = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            records += page["Records"]
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
        if records:
            self.after = records[-1]["dynamodb"]["SequenceNumber"]
        return [self._as_lambda(record) for record in records]

    def _as_lambda(self, record: dict[str, Any]) -> dict[str, Any]:
        change = dict(record["dynamodb"])
        created = change.get("ApproximateCreationDateTime")
        if isinstance(created, datetime.datetime):
            change["ApproximateCreationDateTime"] = int(created.timestamp())
        return {**{k: v for k, v in record.items() if k != "dynamodb"}, "dynamodb": change, "eventSourceARN": self.arn}


def run_announcer(records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """functions/job_announcer over these records; the sequence numbers it reported as failed."""
    answer = _invoke_announcer({"Records": records}, monkeypatch)
    return [failure["itemIdentifier"] for failure in answer["batchItemFailures"]]


def run_backlog(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """functions/job_announcer's scheduled run (the template's AnnounceBacklog input)."""
    return _invoke_announcer({"backlog": True}, monkeypatch)


def _invoke_announcer(event: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from sluice.jobs.announcer import default_announcer

    handler = load_handler("job_announcer")
    # Built on this test's settings and moto (the module-level one belongs to the first import).
    monkeypatch.setattr(handler, "announcer", default_announcer())
    context = SimpleNamespace(
        function_name="sluice-test-job-announcer",
        memory_limit_in_mb=256,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:sluice-test-job-announcer",
        aws_request_id="test-invocation",
        get_remaining_time_in_millis=lambda: 60_000,
    )
    return handler.lambda_handler(event, context)
