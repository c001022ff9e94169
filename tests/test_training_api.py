"""POST /v1/training-jobs: an operator's validated request becomes a training job and its execution.

The training state machine is a Pass state here (as the other kinds' in tests/jobs_support.py): these
tests look at the job row and the execution the API starts; statemachines/ has its own tests.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from sluice.jobs.kinds.training.models import TrainingExecutionInput
from sluice.jobs.models import JobStatus
from sluice.settings import get_settings
from tests.api_support import assert_error, body_of, call, event, header, set_header
from tests.conftest import ROOT, shared_client
from tests.jobs_support import ACCOUNT, DATA_BUCKET, PASS_DEFINITION, as_consumer, create_jobs_stack, set_setting

TRAINING_MACHINE = "sluice-test-training"
INPUT = f"s3://{DATA_BUCKET}/uploads/platform/iris-train/"  # as in events/api/training-job-create.json
IRIS_ROWS = b"setosa,5.1,3.5,1.4,0.2\nversicolor,7.0,3.2,4.7,1.4\nvirginica,6.3,3.3,6.0,2.5\n"
IRIS_INSTANCE_TYPES = ["ml.m5.large", "ml.m5.xlarge", "ml.c5.xlarge"]
IRIS_METRICS = ["validation:accuracy", "train:loss", "sluice:resumed_from_step", "sluice:checkpoint_step"]
# Trainers the tests add to the fixture catalog's iris.
EXTRA_TRAINERS = {
    # Not for the operator the sample events call as (tenant platform).
    "globex-forecaster": {"allowed_callers": ["globex-ops"]},
    # Only instance types that need an operator's approval.
    "iris-gpu": {"instance_types": ["ml.p3.2xlarge", "ml.g5.2xlarge"], "inference_image": None},
}
DETAIL_KEYS = {
    "trainer",
    "image",
    "inference_image",
    "metric_definitions",
    "resume_metric",
    "checkpoint_metric",
    "hyperparameters",
    "instance_type",
    "instance_count",
    "fallback_instance_types",
    "spot",
    "max_runtime_seconds",
    "max_wait_seconds",
    "max_attempts",
    "checkpoint_uri",
    "register",
    "attempts",
}


@pytest.fixture
def training(aws, catalog_document, monkeypatch):
    """The jobs stack with a training state machine, the test trainers and an uploaded training set."""
    document = copy.deepcopy(catalog_document)
    iris = document["trainers"]["iris"]
    for name, changes in EXTRA_TRAINERS.items():
        trainer = {**copy.deepcopy(iris), **changes}
        document["trainers"][name] = {key: value for key, value in trainer.items() if value is not None}
    stack = create_jobs_stack(monkeypatch, document)
    arn = shared_client("stepfunctions").create_state_machine(
        name=TRAINING_MACHINE, definition=PASS_DEFINITION, roleArn=f"arn:aws:iam::{ACCOUNT}:role/sluice-test-sfn"
    )["stateMachineArn"]
    set_setting(monkeypatch, "SLUICE_TRAINING_STATE_MACHINE_ARN", arn)
    stack.put("uploads/platform/iris-train/iris.csv", IRIS_ROWS)
    stack.training_arn = arn
    yield stack
    monkeypatch.undo()
    get_settings.cache_clear()


def training_request(**changes) -> dict:
    """The sample request with fields replaced (None removes one)."""
    body = json.loads(event("training-job-create")["body"])
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return event("training-job-create", body=body)


def nothing_created(training) -> bool:
    return training.all_jobs() == [] and training.executions(training.training_arn) == []


# ---------------------------------------------------------------------- accepted
def test_a_training_run_is_created_with_its_details_and_its_execution_started(training, lambda_context):
    response = call(event("training-job-create"), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    job_id = job["id"]
    assert (job["kind"], job["model"], job["status"]) == ("training", "iris", "QUEUED")
    assert header(response, "Location") == f"/v1/jobs/{job_id}"
    assert header(response, "Idempotent-Replayed") is None
    assert job["input_location"] == INPUT
    assert job["output_location"] == f"s3://{DATA_BUCKET}/training-output/platform/{job_id}/"
    details = training.store.get(job_id).details
    assert set(details) == DETAIL_KEYS
    assert details["trainer"] == "iris"
    assert details["image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris-trainer:1"
    assert details["inference_image"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/iris:1"
    assert [item["Name"] for item in details["metric_definitions"]] == IRIS_METRICS
    assert details["metric_definitions"][0] == {"Name": "validation:accuracy", "Regex": "validation:accuracy=([0-9.]+)"}
    assert (details["resume_metric"], details["checkpoint_metric"]) == (
        "sluice:resumed_from_step",
        "sluice:checkpoint_step",
    )
    assert details["hyperparameters"] == {"epochs": "40", "checkpoint_every": "1"}
    assert (details["instance_type"], details["instance_count"]) == ("ml.m5.large", 1)
    assert details["fallback_instance_types"] == ["ml.m5.xlarge", "ml.c5.xlarge"]
    assert (details["spot"], details["max_runtime_seconds"], details["max_wait_seconds"]) == (True, 3600, 7200)
    assert details["max_attempts"] == 3
    assert details["checkpoint_uri"] == f"s3://{DATA_BUCKET}/checkpoints/platform/{job_id}/"
    assert details["register"] == {
        "group": "iris",
        "metric": "validation:accuracy",
        "threshold": 0.9,
        "higher_is_better": True,
    }
    assert details["attempts"] == []
    (execution,) = training.executions(training.training_arn)
    assert execution["name"] == job_id
    sent = TrainingExecutionInput.model_validate(training.execution_input(execution["executionArn"]))
    assert (sent.job_id, sent.caller, sent.trainer) == (job_id, "platform", "iris")
    assert sent.input_uri == INPUT
    assert sent.output_uri == job["output_location"]
    assert sent.checkpoint_uri == details["checkpoint_uri"]
    assert sent.registration is not None
    assert sent.registration.group == "iris"
    assert training.store.get(job_id).execution_id == execution["executionArn"]


def test_defaults_come_from_the_trainer_and_the_request_overlays_them_as_strings(training, lambda_context):
    body = {"trainer": "iris", "input_prefix": INPUT, "hyperparameters": {"epochs": 5, "lr": 0.05, "shuffle": True}}

    response = call(event("training-job-create", body=body, headers={"Idempotency-Key": "defaults"}), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    details = training.store.get(body_of(response)["id"]).details
    assert details["hyperparameters"] == {"epochs": "5", "checkpoint_every": "1", "lr": "0.05", "shuffle": "true"}
    assert details["instance_type"] == "ml.m5.large"  # the trainer's first
    assert details["fallback_instance_types"] == ["ml.m5.xlarge", "ml.c5.xlarge"]
    assert (details["instance_count"], details["max_attempts"]) == (1, 3)
    assert (details["spot"], details["max_runtime_seconds"], details["max_wait_seconds"]) == (True, 3600, 7200)
    assert "register" not in details
    assert set(details) == DETAIL_KEYS - {"register"}


def test_the_fallback_list_is_the_trainers_types_after_the_chosen_one(training, lambda_context):
    response = call(training_request(instance_type="ml.m5.xlarge"), lambda_context)

    details = training.store.get(body_of(response)["id"]).details
    assert details["instance_type"] == "ml.m5.xlarge"
    assert details["fallback_instance_types"] == ["ml.c5.xlarge"]


def test_an_on_demand_run_has_no_spot_wait(training, lambda_context):
    response = call(training_request(spot=False, max_wait_seconds=None), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    details = training.store.get(body_of(response)["id"]).details
    assert (details["spot"], details["max_wait_seconds"]) == (False, None)


def test_a_trainer_without_an_inference_image_registers_its_training_image(training, lambda_context):
    response = call(training_request(trainer="iris-gpu", instance_type=None, register=None), lambda_context)

    details = training.store.get(body_of(response)["id"]).details
    assert details["inference_image"] == details["image"]


def test_an_instance_type_that_needs_an_approval_waits_for_an_operator(training, lambda_context):
    response = call(training_request(trainer="iris-gpu", instance_type="ml.p3.2xlarge"), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    assert job["status"] == "AWAITING_APPROVAL"
    assert job["links"]["cancel"] == f"/v1/jobs/{job['id']}/cancel"
    assert training.store.get(job["id"]).status == JobStatus.AWAITING_APPROVAL
    # The workflow is started: it asks for the approval and waits (statemachines/training).
    (execution,) = training.executions(training.training_arn)
    sent = training.execution_input(execution["executionArn"])
    assert (sent["instance_type"], sent["fallback_instance_types"]) == ("ml.p3.2xlarge", ["ml.g5.2xlarge"])


def test_the_same_idempotency_key_twice_starts_one_training_run(training, lambda_context):
    first = call(event("training-job-create"), lambda_context)
    second = call(event("training-job-create"), lambda_context)

    assert second["statusCode"] == 202, second["body"]
    assert body_of(first)["id"] == body_of(second)["id"]
    assert header(second, "Idempotent-Replayed") == "true"
    assert len(training.executions(training.training_arn)) == 1
    assert len(training.all_jobs()) == 1


def test_the_same_key_with_another_request_is_refused_as_for_batch(training, lambda_context):
    call(event("training-job-create"), lambda_context)
    evt = training_request(max_attempts=2)

    error = assert_error(call(evt, lambda_context), evt, 422, "idempotency_key_reused")

    assert error["param"] == "Idempotency-Key"
    assert len(training.executions(training.training_arn)) == 1


def test_without_an_idempotency_key_each_request_is_a_new_run(training, lambda_context):
    evt = event("training-job-create")
    set_header(evt, "Idempotency-Key", None)

    first, second = call(evt, lambda_context), call(evt, lambda_context)

    assert body_of(first)["id"] != body_of(second)["id"]
    assert header(second, "Idempotent-Replayed") is None
    assert len(training.executions(training.training_arn)) == 2


def test_a_bucket_the_platform_lists_is_open_to_training(training, lambda_context, monkeypatch):
    shared_client("s3").create_bucket(Bucket="shared-datasets")
    training.put("iris/iris.csv", IRIS_ROWS, bucket="shared-datasets")
    set_setting(monkeypatch, "SLUICE_BATCH_EXTRA_BUCKETS", "shared-datasets")

    response = call(training_request(input_prefix="s3://shared-datasets/iris/"), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    assert body_of(response)["input_location"] == "s3://shared-datasets/iris/"


# ---------------------------------------------------------------------- refused
@pytest.mark.parametrize(
    ("changes", "status", "code", "param", "words"),
    [
        ({"trainer": None}, 422, "validation_failed", "body.trainer", "Field required"),
        ({"input_prefix": None}, 422, "validation_failed", "body.input_prefix", "Field required"),
        ({"input_prefix": "uploads/platform/iris-train/"}, 422, "validation_failed", "body.input_prefix", "s3://"),
        (
            {"max_wait_seconds": 1800},
            422,
            "validation_failed",
            "body.max_wait_seconds",
            "at least max_runtime_seconds (3600)",
        ),
        ({"spot": False}, 422, "validation_failed", "body.max_wait_seconds", "spot training only"),
        (
            {"max_wait_seconds": 172801},
            422,
            "validation_failed",
            "body.max_wait_seconds",
            "at most 172800 seconds on this stack (twice TrainingMaxRuntimeSeconds",
        ),
        (
            {"instance_type": "ml.p3.2xlarge"},
            422,
            "validation_failed",
            "body.instance_type",
            "use one of ml.m5.large, ml.m5.xlarge, ml.c5.xlarge",
        ),
        ({"instance_type": "p3.2xlarge"}, 422, "validation_failed", "body.instance_type", "pattern"),
        ({"instance_count": 5}, 422, "validation_failed", "body.instance_count", "at most 4 instances"),
        ({"instance_count": 0}, 422, "validation_failed", "body.instance_count", "greater than or equal to 1"),
        ({"max_attempts": 6}, 422, "validation_failed", "body.max_attempts", "at most 5 attempts"),
        (
            {"max_runtime_seconds": 86401, "max_wait_seconds": None},
            422,
            "validation_failed",
            "body.max_runtime_seconds",
            "at most 86400 seconds",
        ),
        (
            {"register": {"group": "iris", "metric": "accuracy", "threshold": 0.9}},
            422,
            "validation_failed",
            "body.register.metric",
            "use one of " + ", ".join(IRIS_METRICS),
        ),
        (
            {"register": {"group": "iris_v2", "metric": "validation:accuracy", "threshold": 0.9}},
            422,
            "validation_failed",
            "body.register.group",
            "pattern",
        ),
        (
            {"register": {"group": "iris", "metric": "x"}},
            422,
            "validation_failed",
            "body.register.threshold",
            "required",
        ),
        ({"hyperparameters": {"": "1"}}, 422, "validation_failed", "body.hyperparameters", "1 to 256 characters"),
        ({"approved_by": "me"}, 422, "validation_failed", "body.approved_by", "is not accepted"),
        ({"surprise": 1}, 422, "validation_failed", "body.surprise", "Extra inputs"),
        ({"trainer": "nope"}, 404, "trainer_not_found", "trainer", "Trainer 'nope' does not exist"),
        (
            {"input_prefix": f"s3://{DATA_BUCKET}/uploads/platform/nothing-here/"},
            422,
            "validation_failed",
            "body.input_prefix",
            "input prefix is empty",
        ),
        (
            {"callback": {"sns_topic_arn": f"arn:aws:sns:us-east-1:{ACCOUNT}:acme-jobs"}},
            422,
            "validation_failed",
            "body.callback.sns_topic_arn",
            "not among the callback topics allowed for this caller",
        ),
    ],
)
def test_a_bad_training_request_is_refused_naming_the_field(
    training, lambda_context, changes, status, code, param, words
):
    evt = training_request(**changes)

    error = assert_error(call(evt, lambda_context), evt, status, code)

    assert error["param"] == param
    assert words in error["message"]
    assert nothing_created(training)


def test_every_field_beyond_the_trainer_or_the_limits_is_named_at_once(training, lambda_context):
    evt = training_request(instance_type="ml.g5.48xlarge", instance_count=9, max_attempts=50)

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert [item["field"] for item in error["details"]] == [
        "body.instance_type",
        "body.instance_count",
        "body.max_attempts",
    ]
    assert nothing_created(training)


def test_a_trainer_the_caller_may_not_use_is_answered_as_one_that_does_not_exist(training, lambda_context):
    hidden = training_request(trainer="globex-forecaster")
    unknown = training_request(trainer="globex-forecastr")

    hidden_error = assert_error(call(hidden, lambda_context), hidden, 404, "trainer_not_found")
    unknown_error = assert_error(call(unknown, lambda_context), unknown, 404, "trainer_not_found")

    assert hidden_error["message"].replace("globex-forecaster", "X") == unknown_error["message"].replace(
        "globex-forecastr", "X"
    )
    assert hidden_error["param"] == unknown_error["param"] == "trainer"
    assert nothing_created(training)


@pytest.mark.parametrize(
    "location",
    [
        f"s3://{DATA_BUCKET}/uploads/acme/iris-train/",  # another caller's upload
        f"s3://{DATA_BUCKET}/uploads/platform",  # a prefix that also matches platform-team
        f"s3://{DATA_BUCKET}/batch-output/platform/job-1/",  # readable for batch, not a training set
        f"s3://{DATA_BUCKET}/checkpoints/platform/job-1/",
        "s3://somebody-elses-bucket/iris/",
    ],
)
def test_input_outside_the_callers_own_uploads_is_403(training, lambda_context, location):
    training.put("uploads/acme/iris-train/iris.csv", IRIS_ROWS)
    evt = training_request(input_prefix=location)

    error = assert_error(call(evt, lambda_context), evt, 403, "location_not_allowed")

    assert error["param"] == "input_prefix"
    assert nothing_created(training)


@pytest.mark.parametrize("body", [None, "{}", json.loads(event("training-job-create")["body"])])
def test_a_consumer_cannot_start_a_training_run_whatever_it_sends(training, lambda_context, body):
    evt = as_consumer(event("training-job-create", body=body))

    error = assert_error(call(evt, lambda_context), evt, 403, "operator_required", "permission_error")

    assert "POST /v1/training-jobs needs an operator" in error["message"]
    assert error["details"] == {"route": "POST /v1/training-jobs", "role": "consumer"}
    assert nothing_created(training)


def test_the_sample_event_is_an_operators(training, lambda_context):
    assert event("training-job-create")["requestContext"]["authorizer"]["role"] == "operator"


# ---------------------------------------------------------------------- docs and cold starts
def test_the_openapi_document_lists_the_training_and_registry_routes(lambda_context):
    spec = body_of(call(event("docs"), lambda_context))

    paths = spec["paths"]
    assert set(paths["/v1/training-jobs"]) == {"post"}
    assert set(paths["/v1/registry/{group}"]) == {"get"}
    assert set(paths["/v1/registry/{group}/versions/{version}/approve"]) == {"post"}
    assert set(paths["/v1/registry/{group}/versions/{version}/reject"]) == {"post"}
    post = paths["/v1/training-jobs"]["post"]
    assert "202" in post["responses"]
    assert {item["name"] for item in post["parameters"]} == {"Idempotency-Key"}
    schemas = spec["components"]["schemas"]
    assert {"TrainingJobRequest", "RegisterSpec", "RegistryVersionList", "RegistryVersion"} <= set(schemas)
    # The body's name, not the attribute's: generated clients send "register".
    assert "register" in schemas["TrainingJobRequest"]["properties"]
    assert "approved_by" not in schemas["TrainingJobRequest"]["properties"]


def test_loading_the_api_imports_no_operations_code():
    """The operations routes import their domain code when called: no inference cold start pays for it."""
    probe = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('api_app', 'functions/api/app.py')\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "wanted = ('sluice.jobs.kinds.training.submit', 'sluice.jobs.kinds.training.start', "
        "'sluice.registry.versions', 'sluice.registry.packages', 'sluice.approvals.decisions')\n"
        "print([name for name in wanted if name in sys.modules])\n"
    )
    env = {"PYTHONPATH": f"{ROOT / 'layers' / 'sluice'}", "AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"}
    env.update(
        POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_SERVICE_NAME="sluice", POWERTOOLS_METRICS_NAMESPACE="Sluice"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
