"""The S3 drop: files created under batch-input/<model>/ start one batch job each, exactly once.

The function runs for real (Powertools BatchProcessor) on SQS events carrying S3 notifications, against
moto; a failing start is a fault injected at the Step Functions client (StartExecution refused).
"""

from __future__ import annotations

import copy
import json
import random
from urllib.parse import unquote_plus

from sluice import clients
from sluice.jobs.kinds.batch_transform.drop import drop_job_id
from sluice.jobs.kinds.batch_transform.models import BatchExecutionInput
from sluice.jobs.kinds.batch_transform.policy import transform_plan
from sluice.jobs.models import JobKind, JobStatus
from sluice.settings import get_settings
from tests.conftest import load_event, load_handler, shared_client
from tests.jobs_support import DATA_BUCKET, IRIS_MODEL_NAME, failing_starts

SAMPLE = load_event("batch_drop/s3-objects-created.json")
ROWS = b"5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"


def handle(event: dict, lambda_context) -> dict:
    return load_handler("batch_drop").lambda_handler(event, lambda_context)


def s3_record(
    key: str,
    version: str | None = None,
    sequencer: str = "0055AED6DCD90281E5",
    event_name: str = "ObjectCreated:Put",
    body: bytes = ROWS,
):
    """The notification of a file really created in (moto) S3: its version id is S3's, not made up, because
    the drop copies exactly that version. `version` is only a label; a removal or folder marker is not put."""
    record = copy.deepcopy(json.loads(SAMPLE["Records"][0]["body"])["Records"][0])
    record["eventName"] = event_name
    record["s3"]["object"].update(key=key, sequencer=sequencer)
    if event_name.startswith("ObjectCreated:") and not key.endswith("/"):
        put = shared_client("s3").put_object(Bucket=DATA_BUCKET, Key=key, Body=body)
        record["s3"]["object"].update(versionId=put["VersionId"], eTag=put["ETag"].strip('"'), size=len(body))
    else:
        record["s3"]["object"]["versionId"] = version
    return record


def version_of(body: dict) -> str:
    return body["Records"][0]["s3"]["object"]["versionId"]


def sample_dropped() -> dict:
    """The sample event, its two files put in S3 first (the drop pins the version each notification names)."""
    sample = copy.deepcopy(SAMPLE)
    for message in sample["Records"]:
        body = json.loads(message["body"])
        obj = body["Records"][0]["s3"]["object"]
        put = shared_client("s3").put_object(Bucket=DATA_BUCKET, Key=unquote_plus(obj["key"]), Body=ROWS)
        obj.update(versionId=put["VersionId"], eTag=put["ETag"].strip('"'), size=len(ROWS))
        message["body"] = json.dumps(body)
    return sample


def sqs_event(bodies: list[dict], ids: list[str] | None = None) -> dict:
    template = SAMPLE["Records"][0]
    records = []
    for i, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = ids[i] if ids else f"msg-{i}"
        record["body"] = json.dumps(body)
        records.append(record)
    return {"Records": records}


def test_the_sample_event_starts_one_job_per_file(jobs, lambda_context):
    answer = handle(sample_dropped(), lambda_context)

    assert answer == {"batchItemFailures": []}
    executions = jobs.executions(jobs.batch_arn)
    assert len(executions) == 2
    by_key = {}
    for execution in executions:
        sent = BatchExecutionInput.model_validate(jobs.execution_input(execution["executionArn"]))
        assert execution["name"] == sent.job_id
        job = jobs.store.get(sent.job_id)
        by_key[job.input_location.removeprefix(f"s3://{DATA_BUCKET}/")] = sent
        assert job.kind == JobKind.BATCH
        assert job.caller == "platform"  # SLUICE_BATCH_DROP_CALLER
        assert job.execution_id == execution["executionArn"]
        assert job.details["source"] == "s3-drop"
        assert (sent.output_bucket, sent.output_prefix) == (DATA_BUCKET, f"batch-output/platform/{sent.job_id}/")
        assert sent.model == "iris"
        assert sent.model_name == IRIS_MODEL_NAME
    # Keys arrive URL-encoded ("+" for a space); the content type follows the file extension.
    csv = by_key["batch-input/iris/2026-11-23/part-0001.csv"]
    jsonl = by_key["batch-input/iris/2026-11-23/scores for today.jsonl"]
    assert csv.content_type == "text/csv"
    assert jsonl.content_type == "application/jsonlines"
    assert csv.instance_type == get_settings().batch_default_instance_type


def test_a_burst_of_200_files_with_duplicate_deliveries_starts_exactly_200_jobs(jobs, lambda_context):
    bodies = [
        {"Records": [s3_record(f"batch-input/iris/burst/part-{i:04d}.csv", version=f"v{i:04d}", sequencer=f"{i:018X}")]}
        for i in range(200)
    ]
    # SQS delivers at least once: 40 messages come again, some within the same batch of 10.
    rng = random.Random(7)
    deliveries = bodies + [bodies[i] for i in rng.sample(range(200), 40)]
    rng.shuffle(deliveries)
    deliveries.insert(1, deliveries[0])  # a duplicate inside one batch of 10

    failures = []
    for start in range(0, len(deliveries), 10):
        batch = deliveries[start : start + 10]
        answer = handle(sqs_event(batch, [f"m-{start + i}" for i in range(len(batch))]), lambda_context)
        failures += answer["batchItemFailures"]

    assert failures == []
    assert len(jobs.all_jobs()) == 200
    executions = jobs.executions(jobs.batch_arn)
    assert len(executions) == 200
    assert len({execution["name"] for execution in executions}) == 200
    started = {jobs.store.get(e["name"]).input_location for e in executions}
    assert started == {f"s3://{DATA_BUCKET}/batch-input/iris/burst/part-{i:04d}.csv" for i in range(200)}


def test_a_failing_start_is_reported_for_that_message_only_and_a_retry_starts_it(jobs, lambda_context):
    keys = [f"batch-input/iris/day/part-{i}.csv" for i in range(10)]
    bodies = [{"Records": [s3_record(key, version=f"ver-{i}")]} for i, key in enumerate(keys)]
    doomed = drop_job_id(DATA_BUCKET, keys[3], version_of(bodies[3]))

    with failing_starts(clients.get("stepfunctions"), {doomed}):
        answer = handle(sqs_event(bodies), lambda_context)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "msg-3"}]}
    assert len(jobs.executions(jobs.batch_arn)) == 9
    waiting = jobs.store.get(doomed)
    assert waiting.status == JobStatus.QUEUED  # not failed: the retry must still start it
    assert waiting.execution_id is None

    # SQS delivers the message again once its visibility timeout ends.
    retry = handle(sqs_event([bodies[3]], ["msg-3"]), lambda_context)

    assert retry == {"batchItemFailures": []}
    assert len(jobs.executions(jobs.batch_arn)) == 10
    assert jobs.store.get(doomed).execution_id.endswith(f":{doomed}")
    assert len(jobs.all_jobs()) == 10


def test_a_retry_after_the_execution_started_but_before_it_was_recorded_starts_nothing_new(jobs, lambda_context):
    key = "batch-input/iris/day/late.csv"
    body = {"Records": [s3_record(key, version="v1")]}
    handle(sqs_event([body]), lambda_context)
    job_id = drop_job_id(DATA_BUCKET, key, version_of(body))
    # As if the first attempt died between StartExecution and recording its ARN.
    jobs.store.update_details(job_id, execution_id=None)

    assert handle(sqs_event([body]), lambda_context) == {"batchItemFailures": []}

    (execution,) = jobs.executions(jobs.batch_arn)
    assert jobs.store.get(job_id).execution_id == execution["executionArn"]


def test_a_new_version_of_the_same_key_is_a_new_job(jobs, lambda_context):
    key = "batch-input/iris/daily.csv"
    handle(sqs_event([{"Records": [s3_record(key, version="v1")]}]), lambda_context)
    handle(sqs_event([{"Records": [s3_record(key, version="v2")]}]), lambda_context)

    assert len(jobs.executions(jobs.batch_arn)) == 2


def test_the_s3_test_event_and_keys_outside_the_convention_are_ignored(jobs, lambda_context):
    bodies = [
        json.loads(load_event("batch_drop/s3-test-event.json")["Records"][0]["body"]),
        {"Records": [s3_record("batch-input/no-model-folder.csv", version="v1")]},
        {"Records": [s3_record("batch-input/iris/", version="v1")]},  # a folder marker
        {"Records": [s3_record("elsewhere/iris/file.csv", version="v1")]},
        {"Records": [s3_record("batch-input/iris/removed.csv", version="v1", event_name="ObjectRemoved:Delete")]},
    ]

    answer = handle(sqs_event(bodies), lambda_context)

    assert answer == {"batchItemFailures": []}
    assert jobs.all_jobs() == []
    assert jobs.executions(jobs.batch_arn) == []


def test_a_file_for_a_model_that_cannot_run_batch_is_a_failed_job_not_a_retry(jobs, lambda_context):
    bodies = [
        {"Records": [s3_record("batch-input/unknown-model/a.csv", version="v1")]},
        {"Records": [s3_record("batch-input/claude-chat/b.csv", version="v1")]},  # Bedrock
        {"Records": [s3_record("batch-input/mme-churn/c.csv", version="v1")]},  # no model_name
    ]

    answer = handle(sqs_event(bodies), lambda_context)

    assert answer == {"batchItemFailures": []}
    assert jobs.executions(jobs.batch_arn) == []
    reasons = {}
    for item in jobs.all_jobs():
        job = jobs.store.get(item["job_id"]["S"])
        assert job.status == JobStatus.FAILED
        assert job.finished_at
        reasons[job.model] = job.failure_reason
    assert "not in the catalog" in reasons["unknown-model"]
    assert "SageMaker models only" in reasons["claude-chat"]
    assert "backend.model_name" in reasons["mme-churn"]
    # A second delivery changes nothing.
    assert handle(sqs_event(bodies), lambda_context) == {"batchItemFailures": []}
    assert len(jobs.all_jobs()) == 3


def test_dropped_jobs_are_listed_for_the_platform_caller(jobs, lambda_context):
    handle(sample_dropped(), lambda_context)

    mine, _ = jobs.store.list_for_caller("platform")
    theirs, _ = jobs.store.list_for_caller("acme")

    assert len(mine) == 2
    assert theirs == []


# --- exactly the dropped object and version -------------------------------------------------------


def started_input(jobs, job_id: str) -> BatchExecutionInput:
    (execution,) = [e for e in jobs.executions(jobs.batch_arn) if e["name"] == job_id]
    return BatchExecutionInput.model_validate(jobs.execution_input(execution["executionArn"]))


def s3_text(key: str) -> bytes:
    return shared_client("s3").get_object(Bucket=DATA_BUCKET, Key=key)["Body"].read()


def test_a_dropped_rows_csv_is_scored_alone_not_with_rows_csv_bak(jobs, lambda_context):
    jobs.put("batch-input/iris/rows.csv.bak", b"9,9,9,9\n")
    body = {"Records": [s3_record("batch-input/iris/rows.csv")]}

    assert handle(sqs_event([body]), lambda_context) == {"batchItemFailures": []}

    job_id = drop_job_id(DATA_BUCKET, "batch-input/iris/rows.csv", version_of(body))
    sent = started_input(jobs, job_id)
    pinned = f"batch-pinned/platform/{job_id}/input/"
    assert sent.input_prefix == f"{pinned}rows.csv"
    assert sent.input_manifest_key == f"batch-pinned/platform/{job_id}/manifest.json"
    # The manifest names one object, the pinned copy: nothing else can match it.
    assert json.loads(s3_text(sent.input_manifest_key)) == [{"prefix": f"s3://{DATA_BUCKET}/{pinned}"}, "rows.csv"]
    assert jobs.keys(pinned) == [f"{pinned}rows.csv"]
    assert s3_text(f"{pinned}rows.csv") == ROWS
    plan = transform_plan(sent)
    assert plan.input_data_type == "ManifestFile"
    assert plan.input_uri == f"s3://{DATA_BUCKET}/{sent.input_manifest_key}"
    job = jobs.store.get(job_id)
    assert job.input_location == f"s3://{DATA_BUCKET}/batch-input/iris/rows.csv"
    assert job.details["input_version_id"] == version_of(body)


def test_a_later_overwrite_does_not_change_what_the_dropped_job_scores(jobs, lambda_context):
    key = "batch-input/iris/daily.csv"
    first = {"Records": [s3_record(key, body=b"1,1,1,1\n")]}
    # Overwritten before the first notification is handled (or before SageMaker would read it).
    second = {"Records": [s3_record(key, body=b"2,2,2,2\n")]}

    assert handle(sqs_event([first, second]), lambda_context) == {"batchItemFailures": []}
    jobs.put(key, b"3,3,3,3\n")  # and once more after both jobs started

    for body, rows in ((first, b"1,1,1,1\n"), (second, b"2,2,2,2\n")):
        sent = started_input(jobs, drop_job_id(DATA_BUCKET, key, version_of(body)))
        assert s3_text(sent.input_prefix) == rows


def test_a_dropped_version_deleted_before_its_job_started_fails_the_job_not_a_retry(jobs, lambda_context):
    key = "batch-input/iris/gone.csv"
    body = {"Records": [s3_record(key)]}
    shared_client("s3").delete_object(Bucket=DATA_BUCKET, Key=key, VersionId=version_of(body))

    assert handle(sqs_event([body]), lambda_context) == {"batchItemFailures": []}

    job = jobs.store.get(drop_job_id(DATA_BUCKET, key, version_of(body)))
    assert job.status == JobStatus.FAILED
    assert "could not be pinned" in job.failure_reason
    assert jobs.executions(jobs.batch_arn) == []
    assert jobs.keys("batch-pinned/") == []


def test_a_pin_that_s3_throttles_is_retried_and_the_retry_starts_the_job(jobs, lambda_context):
    from botocore.exceptions import ClientError

    key = "batch-input/iris/slow.csv"
    body = {"Records": [s3_record(key)]}
    other = {"Records": [s3_record("batch-input/iris/fine.csv")]}
    s3 = clients.get("s3")

    def slow_down(params, **_):
        if key in str(params.get("CopySource")):  # a dict, or already the encoded string
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "CopyObject")

    s3.meta.events.register("before-parameter-build.s3.CopyObject", slow_down)
    try:
        answer = handle(sqs_event([body, other], ["msg-slow", "msg-fine"]), lambda_context)
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.CopyObject", slow_down)

    assert answer == {"batchItemFailures": [{"itemIdentifier": "msg-slow"}]}
    job_id = drop_job_id(DATA_BUCKET, key, version_of(body))
    assert jobs.store.get(job_id).status == JobStatus.QUEUED
    assert [e["name"] for e in jobs.executions(jobs.batch_arn)] == [
        drop_job_id(DATA_BUCKET, "batch-input/iris/fine.csv", version_of(other))
    ]

    assert handle(sqs_event([body], ["msg-slow"]), lambda_context) == {"batchItemFailures": []}
    assert s3_text(started_input(jobs, job_id).input_prefix) == ROWS


def test_an_unversioned_drop_overwritten_before_it_was_pinned_is_not_scored_in_its_place(jobs, lambda_context):
    """Without a version id the copy is conditional on the notified ETag. moto ignores CopySourceIfMatch,
    so the test records the condition sent and answers as S3 does for a changed object (412)."""
    from botocore.exceptions import ClientError

    key = "batch-input/iris/unversioned.csv"
    body = {"Records": [s3_record(key, body=b"1,1,1,1\n")]}
    obj = body["Records"][0]["s3"]["object"]
    obj["versionId"] = None
    sent: list[dict] = []

    def changed_since(params, **_):
        sent.append(dict(params))
        raise ClientError({"Error": {"Code": "PreconditionFailed", "Message": "At least one failed"}}, "CopyObject")

    s3 = clients.get("s3")
    s3.meta.events.register("before-parameter-build.s3.CopyObject", changed_since)
    try:
        answer = handle(sqs_event([body]), lambda_context)
    finally:
        s3.meta.events.unregister("before-parameter-build.s3.CopyObject", changed_since)

    assert answer == {"batchItemFailures": []}
    assert [call["CopySourceIfMatch"] for call in sent] == [f'"{obj["eTag"]}"']
    assert "VersionId" not in str(sent[0]["CopySource"])
    (item,) = jobs.all_jobs()
    job = jobs.store.get(item["job_id"]["S"])
    assert job.status == JobStatus.FAILED
    assert "could not be pinned" in job.failure_reason
    assert jobs.executions(jobs.batch_arn) == []
