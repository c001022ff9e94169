"""Jobs under load on `make local`: nothing accepted is lost or doubled, and each job is announced once.

    .venv/bin/python benchmarks/jobs_load.py [--async-jobs 200] [--drops 1000] [--burst 100] [--timeout 900]

Starts local mode on free ports, then:
- submits --async-jobs async jobs concurrently through the API, each with its own Idempotency-Key, and
  sends a share of them again with the same key (a client retrying after a lost answer);
- drops --drops CSV files into the data bucket in bursts of --burst, and delivers a share of the S3
  notifications to the drop queue a second time (S3 delivers at least once);
- waits until every job is final, reading the jobs table, and counts the job events topic's messages
  (an SQS queue subscribed to it).
Prints how many jobs were created, how many reached each final state, duplicates (must be 0), jobs lost
(must be 0), announcements per job (must be exactly 1) and the time taken. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "local"))

from sluice_local.launch import LocalProcess  # noqa: E402 - scripts run without an installed package

FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
ANNOUNCE_IDLE_SECONDS = 60
ROW = b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"


def aws(local: LocalProcess, service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{local.ports['aws']}",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def stack_outputs(local: LocalProcess) -> dict[str, str]:
    stacks = aws(local, "cloudformation").describe_stacks()["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def submit(url: str, key: str, idempotency_key: str) -> tuple[int, str | None]:
    request = urllib.request.Request(
        f"{url}/v1/models/iris/async",
        data=json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        },
        method="POST",
    )
    for attempt in range(8):
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())["id"]
        except urllib.error.HTTPError as error:
            # 409 idempotency_key_in_progress / 429 / 503: a client backs off and retries the same key.
            if error.code in (409, 429, 503) and attempt < 7:
                time.sleep(0.2 * 2**attempt)
                continue
            return error.code, None
        except OSError:
            # A connection reset or timeout: the answer was lost, so the client retries with the same key.
            if attempt < 7:
                time.sleep(0.2 * 2**attempt)
                continue
            return 0, None
    return 0, None


def subscribe_events(local: LocalProcess, topic_arn: str) -> str:
    sqs = aws(local, "sqs")
    queue_url = sqs.create_queue(QueueName=f"bench-job-events-{secrets.token_hex(4)}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    aws(local, "sns").subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"}
    )
    return queue_url


def drain_events(local: LocalProcess, queue_url: str, seen: collections.Counter) -> None:
    sqs = aws(local, "sqs")
    while True:
        page = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = page.get("Messages", [])
        if not messages:
            return
        for message in messages:
            body = json.loads(message["Body"])
            job = body.get("job", {})
            seen[job.get("id") or job.get("job_id")] += 1
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


def scan_jobs(local: LocalProcess, table: str) -> list[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserialize = TypeDeserializer().deserialize
    items, start = [], None
    dynamodb = aws(local, "dynamodb")
    while True:
        page = dynamodb.scan(TableName=table, **({"ExclusiveStartKey": start} if start else {}))
        items += [{k: deserialize(v) for k, v in item.items()} for item in page.get("Items", [])]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def drop_files(local: LocalProcess, bucket: str, queue_url: str, count: int, burst: int, run: str) -> list[str]:
    """Puts `count` files under batch-input/iris/; re-sends every tenth file's S3 notification."""
    s3, sqs = aws(local, "s3"), aws(local, "sqs")
    keys: list[str] = []

    def put(index: int) -> str:
        key = f"batch-input/iris/{run}/rows-{index:05d}.csv"
        answer = s3.put_object(Bucket=bucket, Key=key, Body=ROW)
        if index % 10 == 0:
            duplicate = {
                "Records": [
                    {
                        "eventVersion": "2.1",
                        "eventSource": "aws:s3",
                        "awsRegion": "us-east-1",
                        "eventName": "ObjectCreated:Put",
                        "s3": {
                            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                            "object": {"key": key, "size": len(ROW), "versionId": answer.get("VersionId")},
                        },
                    }
                ]
            }
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(duplicate))
        return key

    with ThreadPoolExecutor(max_workers=16) as pool:
        for first in range(0, count, burst):
            keys += list(pool.map(put, range(first, min(first + burst, count))))
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--async-jobs", type=int, default=200)
    parser.add_argument("--drops", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every job to be final")
    args = parser.parse_args(argv)

    key, operator_key = f"sk-sluice-bench-{secrets.token_hex(8)}", f"sk-sluice-bench-ops-{secrets.token_hex(8)}"
    local = LocalProcess({"SLUICE_LOCAL_API_KEY": key, "SLUICE_LOCAL_OPERATOR_KEY": operator_key}).start()
    try:
        outputs = stack_outputs(local)
        events_queue = subscribe_events(local, outputs["JobEventsTopicArn"])
        drop_queue = next(
            url for url in aws(local, "sqs").list_queues()["QueueUrls"] if "BatchDropQueue" in url and "Dead" not in url
        )
        run = secrets.token_hex(3)
        started = time.monotonic()

        idempotency_keys = [f"bench-{run}-{i}" for i in range(args.async_jobs)]
        # Every fifth request is sent twice, concurrently: a client retrying before its first answer came.
        requests = idempotency_keys + idempotency_keys[::5]
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(lambda k: (k, *submit(local.url, key, k)), requests))
        accepted = collections.defaultdict(set)
        refused = collections.Counter()
        for idem, status, job_id in answers:
            if status == 202 and job_id:
                accepted[idem].add(job_id)
            else:
                refused[status] += 1
        submitted_seconds = time.monotonic() - started

        dropped = drop_files(local, outputs["DataBucketName"], drop_queue, args.drops, args.burst, run)
        dropped_seconds = time.monotonic() - started

        seen: collections.Counter = collections.Counter()
        deadline = time.monotonic() + args.timeout
        while True:
            drain_events(local, events_queue, seen)
            jobs = scan_jobs(local, outputs["JobsTableName"])
            # A fresh local stack: every job in the table is this run's.
            mine = jobs
            unfinished = [j for j in mine if j["status"] not in FINAL]
            if (not unfinished and len(mine) >= len(accepted) + len(dropped)) or time.monotonic() > deadline:
                break
            time.sleep(2)
        finished_seconds = time.monotonic() - started
        # The announcer follows the jobs table's stream in the background: wait until every job was
        # announced, or until announcements stop coming for ANNOUNCE_IDLE_SECONDS (then it counts what is missing).
        last_progress, announced_count = time.monotonic(), -1
        while time.monotonic() < deadline:
            drain_events(local, events_queue, seen)
            count = sum(1 for job in mine if seen.get(job["job_id"]))
            if count == len(mine):
                break
            if count != announced_count:
                last_progress, announced_count = time.monotonic(), count
            elif time.monotonic() - last_progress > ANNOUNCE_IDLE_SECONDS:
                break
            time.sleep(2)
        time.sleep(2)
        drain_events(local, events_queue, seen)
        pending_marker = sum(1 for job in scan_jobs(local, outputs["JobsTableName"]) if job.get("announce_pending"))
        elapsed = time.monotonic() - started
    finally:
        local.stop()

    async_jobs = [j for j in mine if j["kind"] == "async"]
    drop_jobs = [j for j in mine if j["kind"] == "batch"]
    by_input = collections.Counter(j["input_location"] for j in drop_jobs)
    duplicates = sum(len(ids) - 1 for ids in accepted.values()) + sum(n - 1 for n in by_input.values())
    duplicates += max(0, len(async_jobs) - len(accepted))
    rows = {j["job_id"] for j in mine}
    lost = sum(1 for ids in accepted.values() for job_id in ids if job_id not in rows)
    lost += sum(1 for key_ in dropped if not any(key_ in location for location in by_input))
    lost += len(unfinished)
    announced = {job_id: seen.get(job_id, 0) for job_id in rows}
    unannounced = sum(1 for n in announced.values() if n == 0)
    announced_twice = sum(1 for n in announced.values() if n > 1)

    states = collections.Counter(j["status"] for j in mine)
    print(f"async jobs: {args.async_jobs} keys, {len(requests)} requests (every fifth key sent twice at once)")
    print(f"  accepted {len(accepted)} keys, refused {dict(refused)}")
    print(f"dropped files: {len(dropped)} (every tenth notification delivered twice)")
    print(f"jobs created: {len(mine)} (async {len(async_jobs)}, batch {len(drop_jobs)})")
    print(
        "final states: "
        + ", ".join(f"{state} {states.get(state, 0)}" for state in ("SUCCEEDED", "FAILED", "CANCELLED"))
    )
    print(f"not final at the end: {len(unfinished)}")
    print(f"duplicates: {duplicates}")
    print(f"jobs lost: {lost}")
    print(f"announcements: {sum(announced.values())} for {len(rows)} jobs")
    print(f"  jobs never announced: {unannounced}; announced more than once: {announced_twice}")
    print(f"  jobs whose outbox marker is still set (announcement pending): {pending_marker}")
    print(f"time: submitted in {submitted_seconds:.1f} s, dropped by {dropped_seconds:.1f} s")
    print(f"  every job final after {finished_seconds:.1f} s, every announcement seen after {elapsed:.1f} s")
    return 0 if duplicates == 0 and lost == 0 and unannounced == 0 and announced_twice == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
