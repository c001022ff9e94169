"""The jobs stack in moto for API and batch drop tests: tables, data bucket, two state machines, catalog.

State machines get a trivial Pass definition: the tests look at the executions the API starts (name,
input, status), not at what they do (statemachines/ has its own tests).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sluice.jobs.store import JobStore
from sluice.settings import get_settings
from tests.api_support import store_catalog
from tests.conftest import shared_client

REGION, ACCOUNT = "us-east-1", "123456789012"
DATA_BUCKET = "sluice-test-data"
JOBS_TABLE = "sluice-test-jobs"
IDEMPOTENCY_TABLE = "sluice-test-idempotency"
UPLOAD_TICKETS_TABLE = "sluice-test-upload-tickets"
APPROVALS_TABLE = "sluice-test-approvals"
ASYNC_MACHINE = "sluice-test-async-inference"
BATCH_MACHINE = "sluice-test-batch-transform"
JOBS_ENV = {
    "SLUICE_JOBS_TABLE": JOBS_TABLE,
    "SLUICE_IDEMPOTENCY_TABLE": IDEMPOTENCY_TABLE,
    "SLUICE_UPLOAD_TICKETS_TABLE": UPLOAD_TICKETS_TABLE,
    "SLUICE_APPROVALS_TABLE": APPROVALS_TABLE,
    "SLUICE_DATA_BUCKET": DATA_BUCKET,
    "SLUICE_ASYNC_STATE_MACHINE_ARN": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{ASYNC_MACHINE}",
    "SLUICE_BATCH_STATE_MACHINE_ARN": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{BATCH_MACHINE}",
    "SLUICE_BATCH_DROP_CALLER": "platform",
    "SLUICE_CALLBACK_TOPICS_PARAMETER": "/sluice/test/callback-topics",
    "SLUICE_CALLBACK_TOPIC_ARN_PATTERNS": f"arn:aws:sns:{REGION}:{ACCOUNT}:*",
}
# Each test caller's own callback topics (tools/keys.py callback-topics writes this document).
CALLBACK_TOPICS = {"version": 1, "callers": {"acme": [f"arn:aws:sns:{REGION}:{ACCOUNT}:acme-*"]}}
PASS_DEFINITION = json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})
# Catalog entries the jobs tests add to the shared fixture catalog.
JOBS_MODELS = {
    "churn-async": {
        "description": "Churn scoring on a SageMaker asynchronous endpoint",
        "task": "predict",
        "backend": {
            "provider": "sagemaker",
            "endpoint_name": "sluice-churn-async",
            "async_endpoint": True,
            "extra_content_types": ["text/csv"],
        },
        "allowed_callers": ["*"],
    },
    "churn-batch": {
        "description": "Churn scoring for batch transform only",
        "task": "predict",
        "backend": {"provider": "sagemaker", "endpoint_name": "sluice-churn", "model_name": "churn-v3"},
        "allowed_callers": ["*"],
    },
}
IRIS_MODEL_NAME = "sluice-iris-v1"


@dataclass
class JobsStack:
    async_arn: str
    batch_arn: str

    @property
    def store(self) -> JobStore:
        return JobStore(shared_client("dynamodb"), JOBS_TABLE, ttl_days=30)

    def executions(self, arn: str) -> list[dict[str, Any]]:
        pages = shared_client("stepfunctions").get_paginator("list_executions").paginate(stateMachineArn=arn)
        return [execution for page in pages for execution in page["executions"]]

    def execution_input(self, execution_arn: str) -> dict[str, Any]:
        return json.loads(shared_client("stepfunctions").describe_execution(executionArn=execution_arn)["input"])

    def keys(self, prefix: str = "") -> list[str]:
        pages = shared_client("s3").get_paginator("list_objects_v2").paginate(Bucket=DATA_BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def put(self, key: str, body: bytes | str = b"5.1,3.5,1.4,0.2\n", bucket: str = DATA_BUCKET) -> dict:
        return shared_client("s3").put_object(Bucket=bucket, Key=key, Body=body)

    def all_jobs(self) -> list[dict[str, Any]]:
        pages = shared_client("dynamodb").get_paginator("scan").paginate(TableName=JOBS_TABLE)
        return [item for page in pages for item in page["Items"]]


def create_jobs_stack(monkeypatch: Any, catalog_document: dict) -> JobsStack:
    """Inside an active moto mock: every resource the job routes use, and the settings naming them.

    moto's plain Step Functions backend, without its ASL interpreter: executions stay RUNNING, as
    a real one does while the API looks at it. (A module that first imported moto's Step Functions
    responses while the embedded AWS had the interpreter's backend swapped in keeps that backend.)
    """
    import moto.stepfunctions.models as sfn_models
    import moto.stepfunctions.responses as sfn_responses
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": False})
    if not type(sfn_models.stepfunctions_backends[ACCOUNT][REGION]).__module__.endswith(".parser.models"):
        monkeypatch.setattr(sfn_responses, "stepfunctions_backends", sfn_models.stepfunctions_backends)
    for name, value in JOBS_ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    document = copy.deepcopy(catalog_document)
    document["models"].update(copy.deepcopy(JOBS_MODELS))
    document["models"]["iris"]["backend"]["model_name"] = IRIS_MODEL_NAME
    store_catalog(document)
    shared_client("ssm").put_parameter(
        Name=JOBS_ENV["SLUICE_CALLBACK_TOPICS_PARAMETER"],
        Value=json.dumps(CALLBACK_TOPICS),
        Type="String",
        Overwrite=True,
    )
    from sluice.jobs import callback_topics

    callback_topics.reset()

    dynamodb = shared_client("dynamodb")
    # As template.yaml's JobsTable: its stream feeds the announcer (tests/announcer_support.py).
    attributes = ("job_id", "caller", "created_at", "status", "updated_at", "announce_pending", "finished_at")
    dynamodb.create_table(
        TableName=JOBS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in attributes],
        KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "ByCaller",
                "KeySchema": [
                    {"AttributeName": "caller", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            },
            # As template.yaml's: the reaper's stale jobs per status (sluice.jobs.reaper).
            {
                "IndexName": "ByStatus",
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "updated_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["kind"]},
            },
            {
                "IndexName": "PendingAnnouncements",
                "KeySchema": [
                    {"AttributeName": "announce_pending", "KeyType": "HASH"},
                    {"AttributeName": "finished_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            },
        ],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    dynamodb.create_table(
        TableName=IDEMPOTENCY_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )
    # As template.yaml's UploadTicketsTable.
    dynamodb.create_table(
        TableName=UPLOAD_TICKETS_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "caller", "AttributeType": "S"},
            {"AttributeName": "upload_id", "AttributeType": "S"},
            {"AttributeName": "expires_at", "AttributeType": "N"},
        ],
        KeySchema=[
            {"AttributeName": "caller", "KeyType": "HASH"},
            {"AttributeName": "upload_id", "KeyType": "RANGE"},
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "ByExpiry",
                "KeySchema": [
                    {"AttributeName": "caller", "KeyType": "HASH"},
                    {"AttributeName": "expires_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    create_approvals_table(dynamodb)
    s3 = shared_client("s3")
    s3.create_bucket(Bucket=DATA_BUCKET)
    s3.put_bucket_versioning(Bucket=DATA_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    stepfunctions = shared_client("stepfunctions")
    arns = [
        stepfunctions.create_state_machine(
            name=name, definition=PASS_DEFINITION, roleArn=f"arn:aws:iam::{ACCOUNT}:role/sluice-test-sfn"
        )["stateMachineArn"]
        for name in (ASYNC_MACHINE, BATCH_MACHINE)
    ]
    return JobsStack(async_arn=arns[0], batch_arn=arns[1])


def create_approvals_table(dynamodb: Any, name: str = APPROVALS_TABLE) -> None:
    """The approvals table as template.yaml defines it (ByStatus projects everything but the task token)."""
    from sluice.approvals.store import BY_STATUS_INDEX

    dynamodb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": "S"} for n in ("approval_id", "status", "requested_at")
        ],
        KeySchema=[{"AttributeName": "approval_id", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": BY_STATUS_INDEX,
                "KeySchema": [
                    {"AttributeName": "status", "KeyType": "HASH"},
                    {"AttributeName": "requested_at", "KeyType": "RANGE"},
                ],
                "Projection": {
                    "ProjectionType": "INCLUDE",
                    "NonKeyAttributes": [
                        "job_id",
                        "kind",
                        "instance_type",
                        "instance_count",
                        "requested_by",
                        "expires_at",
                    ],
                },
            }
        ],
    )


def for_path_id(evt: dict, name: str, value: str) -> dict:
    """The same request for another id in its path (`name` is the path parameter)."""
    evt = copy.deepcopy(evt)
    old = evt["pathParameters"][name]
    evt["pathParameters"][name] = value
    evt["path"] = evt["path"].replace(old, value)
    evt["requestContext"]["path"] = evt["requestContext"]["path"].replace(old, value)
    return evt


def as_operator(evt: dict, tenant: str = "platform") -> dict:
    """The same request made with an operator key."""
    evt = copy.deepcopy(evt)
    evt["requestContext"]["authorizer"].update(tenant=tenant, principalId=tenant, role="operator")
    return evt


def as_consumer(evt: dict, tenant: str = "acme") -> dict:
    """The same request made with a consumer key (no role in the context means consumer)."""
    evt = copy.deepcopy(evt)
    evt["requestContext"]["authorizer"] = {"tenant": tenant, "key_id": "key_0123456789ab", "auth": "api_key"}
    evt["requestContext"]["authorizer"]["principalId"] = tenant
    return evt


def set_setting(monkeypatch: Any, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@contextmanager
def calls_recorded(clients: dict[str, Any]) -> Iterator[list[str]]:
    """Records 'service.Operation' for every call the given clients make, in order."""
    made: list[str] = []
    handlers: list[tuple[Any, Callable]] = []
    for service, client in clients.items():

        def record(model: Any, service: str = service, **_: Any) -> None:
            made.append(f"{service}.{model.name}")

        client.meta.events.register("before-call", record)
        handlers.append((client, record))
    try:
        yield made
    finally:
        for client, handler in handlers:
            client.meta.events.unregister("before-call", handler)


@contextmanager
def failing_starts(client: Any, names: set[str], code: str = "ServiceUnavailable") -> Iterator[None]:
    """Step Functions refuses StartExecution for these execution names (a fault at the AWS boundary)."""
    from botocore.exceptions import ClientError

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params.get("name") in names:
            raise ClientError({"Error": {"Code": code, "Message": "injected failure"}}, "StartExecution")

    client.meta.events.register("before-parameter-build.sfn.StartExecution", refuse)
    try:
        yield
    finally:
        client.meta.events.unregister("before-parameter-build.sfn.StartExecution", refuse)


def as_caller(evt: dict, tenant: str) -> dict:
    """The same request made with another tenant's API key."""
    evt = copy.deepcopy(evt)
    evt["requestContext"]["authorizer"].update(tenant=tenant, principalId=tenant)
    return evt


def for_model(evt: dict, model: str) -> dict:
    """The same request sent to another model's route."""
    evt = copy.deepcopy(evt)
    old = evt["pathParameters"]["model"]
    evt["pathParameters"]["model"] = model
    evt["path"] = evt["path"].replace(f"/models/{old}/", f"/models/{model}/", 1)
    evt["requestContext"]["path"] = evt["requestContext"]["path"].replace(f"/models/{old}/", f"/models/{model}/", 1)
    return evt
