"""POST /v1/deployments and POST /v1/deployments/{id}/rollback (operators), and cancelling a deployment.

The deployment state machine is a Pass state here (as the other kinds' in tests/jobs_support.py): these
tests look at the job row, the lock and the execution the API starts; statemachines/ has its own tests.
The endpoint `sluice-iris` of the catalog's iris entry runs variant v1 (sluice-iris-v1, 2 x ml.m5.large).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from sluice.jobs.kinds.deployment import hooks
from sluice.jobs.kinds.deployment.lock import EndpointLocks
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.settings import Settings, get_settings
from tests.api_support import assert_error, body_of, call, event, header, set_header
from tests.conftest import shared_client
from tests.jobs_support import ACCOUNT, PASS_DEFINITION, as_caller, as_consumer, create_jobs_stack, set_setting
from tests.test_deployment_lock import LOCKS_TABLE, create_locks_table
from tests.test_registry_api import register

DEPLOYMENT_MACHINE = "sluice-test-deployment"
ENDPOINT = "sluice-iris"
BASELINE_CONFIG = "sluice-iris-config-1"
MODEL_ROLE = f"arn:aws:iam::{ACCOUNT}:role/sluice-test-model"
DETAIL_KEYS = {
    "endpoint_name",
    "model_name",
    "variant_name",
    "instance_type",
    "instance_count",
    "strategy",
    "weights",
    "promote",
    "bake_seconds",
    "guards",
    "autoscaling",
    "steps",
}
PACKAGE_KEYS = DETAIL_KEYS | {"model_package_arn", "model_created"}


def create_model(name: str) -> None:
    shared_client("sagemaker").create_model(
        ModelName=name,
        PrimaryContainer={"Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/iris:1"},
        ExecutionRoleArn=MODEL_ROLE,
    )


def create_endpoint(name: str, config: str, variants: list[tuple[str, str, str, int]]) -> None:
    sagemaker = shared_client("sagemaker")
    sagemaker.create_endpoint_config(
        EndpointConfigName=config,
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": model,
                "InstanceType": instance_type,
                "InitialInstanceCount": count,
                "InitialVariantWeight": 1,
            }
            for variant, model, instance_type, count in variants
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config)


@pytest.fixture
def deployments(aws, catalog_document, monkeypatch):
    stack = create_jobs_stack(monkeypatch, catalog_document)
    arn = shared_client("stepfunctions").create_state_machine(
        name=DEPLOYMENT_MACHINE, definition=PASS_DEFINITION, roleArn=f"arn:aws:iam::{ACCOUNT}:role/sluice-test-sfn"
    )["stateMachineArn"]
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_STATE_MACHINE_ARN", arn)
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_LOCKS_TABLE", LOCKS_TABLE)
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_MODEL_ROLE_ARN", MODEL_ROLE)
    create_locks_table(shared_client("dynamodb"))
    for model in ("sluice-iris-v1", "sluice-iris-v2"):
        create_model(model)
    create_endpoint(ENDPOINT, BASELINE_CONFIG, [("v1", "sluice-iris-v1", "ml.m5.large", 2)])
    stack.deployment_arn = arn
    stack.locks = EndpointLocks(shared_client("dynamodb"), LOCKS_TABLE, jobs=stack.store)
    yield stack
    monkeypatch.undo()
    get_settings.cache_clear()


def deployment_request(name: str = "deployment-create", **changes) -> dict:
    """The sample request with fields replaced (None removes one)."""
    body = json.loads(event(name)["body"])
    for field, value in changes.items():
        if value is None:
            body.pop(field, None)
        else:
            body[field] = value
    return event(name, body=body)


def without_key(evt: dict) -> dict:
    set_header(evt, "Idempotency-Key", None)
    return evt


def deploy(lambda_context, evt: dict | None = None) -> dict:
    response = call(evt or event("deployment-create"), lambda_context)
    assert response["statusCode"] == 202, response["body"]
    return body_of(response)


def nothing_created(deployments) -> bool:
    return (
        deployments.all_jobs() == []
        and deployments.executions(deployments.deployment_arn) == []
        and deployments.locks.holder(ENDPOINT) is None
    )


# ---------------------------------------------------------------------- accepted
def test_a_canary_deployment_is_created_with_its_plan_its_lock_and_its_execution(deployments, lambda_context, caplog):
    caplog.set_level(logging.INFO)
    response = call(event("deployment-create"), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    job = body_of(response)
    job_id = job["id"]
    assert (job["kind"], job["model"], job["status"]) == ("deployment", "iris", "QUEUED")
    assert header(response, "Location") == f"/v1/jobs/{job_id}"
    assert job["input_location"] == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/sluice-iris-v2"
    assert job["output_location"] == f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}"
    details = deployments.store.get(job_id).details
    assert set(details) == DETAIL_KEYS
    assert details["endpoint_name"] == ENDPOINT
    assert (details["model_name"], details["variant_name"]) == ("sluice-iris-v2", "sluice-iris-v2")
    # The endpoint's first variant's instances.
    assert (details["instance_type"], details["instance_count"]) == ("ml.m5.large", 2)
    assert (details["strategy"], details["weights"], details["promote"]) == ("canary", [5, 25, 100], True)
    assert details["bake_seconds"] == 300
    assert details["guards"] == {
        "error_rate_percent": 1,
        "p99_latency_ms": 2000,
        "low_confidence_percent": 5,
        "min_invocations": 50,
        "consecutive_breaches": 2,
    }
    assert details["autoscaling"] == {
        "min": 1,
        "max": 4,
        "target_invocations_per_instance": 500,
        "scale_in_cooldown": 300,
        "scale_out_cooldown": 60,
    }
    assert details["steps"] == []
    assert deployments.locks.holder(ENDPOINT) == job_id
    (execution,) = deployments.executions(deployments.deployment_arn)
    assert execution["name"] == job_id
    sent = DeploymentExecutionInput.model_validate(deployments.execution_input(execution["executionArn"]))
    assert (sent.job_id, sent.caller, sent.model, sent.endpoint_name) == (job_id, "platform", "iris", ENDPOINT)
    assert (sent.model_name, sent.variant_name, sent.weights, sent.promote) == (
        "sluice-iris-v2",
        "sluice-iris-v2",
        [5, 25, 100],
        True,
    )
    assert sent.guards.min_invocations == 50
    assert sent.autoscaling.scale_in_cooldown == 300
    assert deployments.store.get(job_id).execution_id == execution["executionArn"]
    (audit,) = [r for r in caplog.records if getattr(r, "audit", None) == "deployment"]
    assert (audit.who, audit.what) == ("platform", "deploy")


def test_every_left_out_number_is_the_stacks_default(deployments, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_CANARY_STEPS", "10,50,100")
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_BAKE_SECONDS", "60")
    set_setting(monkeypatch, "SLUICE_GUARD_MIN_INVOCATIONS", "20")
    set_setting(monkeypatch, "SLUICE_AUTOSCALING_MAX", "8")
    evt = without_key(event("deployment-create", body={"model": "iris", "model_name": "sluice-iris-v2"}))

    job = deploy(lambda_context, evt)

    details = deployments.store.get(job["id"]).details
    assert (details["strategy"], details["weights"], details["bake_seconds"]) == ("canary", [10, 50, 100], 60)
    assert details["guards"]["min_invocations"] == 20
    assert details["guards"]["error_rate_percent"] == 1
    assert details["autoscaling"]["max"] == 8
    assert details["autoscaling"]["min"] == 1


def test_request_values_beat_the_defaults_even_when_zero(deployments, lambda_context):
    body = {
        "model": "iris",
        "model_name": "sluice-iris-v2",
        "guards": {"error_rate_percent": 0},
        "autoscaling": {"scale_in_cooldown": 0, "min": 2, "max": 2},
        "instance_type": "ml.c5.xlarge",
        "instance_count": 1,
        "variant_name": "canary-v2",
    }

    job = deploy(lambda_context, without_key(event("deployment-create", body=body)))

    details = deployments.store.get(job["id"]).details
    assert details["guards"]["error_rate_percent"] == 0
    assert (details["autoscaling"]["scale_in_cooldown"], details["autoscaling"]["min"]) == (0, 2)
    assert (details["instance_type"], details["instance_count"], details["variant_name"]) == (
        "ml.c5.xlarge",
        1,
        "canary-v2",
    )


@pytest.mark.parametrize(
    ("changes", "weights", "promote"),
    [
        ({"strategy": "linear", "steps": None}, [25, 50, 75, 100], True),
        ({"strategy": "linear", "steps": None, "linear_step_percent": 30}, [30, 60, 90, 100], True),
        ({"strategy": "blue_green", "steps": None}, [100], True),
        ({"strategy": "ab", "steps": None}, [50], False),
        ({"strategy": "ab", "steps": None, "split_percent": 10}, [10], False),
        ({"steps": [1, 100]}, [1, 100], True),
    ],
)
def test_each_strategy_has_its_weights(deployments, lambda_context, changes, weights, promote):
    job = deploy(lambda_context, without_key(deployment_request(**changes)))

    details = deployments.store.get(job["id"]).details
    assert (details["weights"], details["promote"]) == (weights, promote)
    assert details["strategy"] == changes.get("strategy", "canary")


def test_a_variant_on_an_instance_type_above_the_approval_line_waits_for_an_operator(deployments, lambda_context):
    job = deploy(lambda_context, deployment_request(instance_type="ml.p3.2xlarge"))

    assert job["status"] == "AWAITING_APPROVAL"
    # The workflow is started: it asks for the approval and waits.
    (execution,) = deployments.executions(deployments.deployment_arn)
    assert deployments.execution_input(execution["executionArn"])["instance_type"] == "ml.p3.2xlarge"


def test_the_same_idempotency_key_twice_is_one_deployment_and_no_conflict(deployments, lambda_context):
    first = call(event("deployment-create"), lambda_context)
    second = call(event("deployment-create"), lambda_context)

    assert second["statusCode"] == 202, second["body"]
    assert body_of(first)["id"] == body_of(second)["id"]
    assert header(second, "Idempotent-Replayed") == "true"
    assert len(deployments.executions(deployments.deployment_arn)) == 1
    assert len(deployments.all_jobs()) == 1


def test_the_same_key_with_another_request_is_refused(deployments, lambda_context):
    deploy(lambda_context)
    evt = deployment_request(bake_seconds=60)

    error = assert_error(call(evt, lambda_context), evt, 422, "idempotency_key_reused")

    assert error["param"] == "Idempotency-Key"


# ---------------------------------------------------------------------- one per endpoint
def test_a_second_deployment_on_the_same_endpoint_is_409_naming_the_first(deployments, lambda_context):
    first = deploy(lambda_context)
    evt = without_key(deployment_request(variant_name="another"))

    error = assert_error(call(evt, lambda_context), evt, 409, "deployment_in_progress")

    assert first["id"] in error["message"]
    assert error["details"] == {"endpoint_name": ENDPOINT, "job_id": first["id"]}
    assert len(deployments.all_jobs()) == 1
    assert deployments.locks.holder(ENDPOINT) == first["id"]


def test_once_the_first_deployment_is_final_the_endpoint_is_free_again(deployments, lambda_context):
    first = deploy(lambda_context)
    deployments.store.transition(first["id"], JobStatus.RUNNING)
    deployments.store.transition(first["id"], JobStatus.SUCCEEDED)  # its workflow did not release (a crash)

    second = deploy(lambda_context, without_key(deployment_request(variant_name="another")))

    assert deployments.locks.holder(ENDPOINT) == second["id"]


def test_a_start_that_fails_gives_the_lock_back(deployments, lambda_context, monkeypatch):
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_STATE_MACHINE_ARN", "")
    evt = event("deployment-create")

    assert_error(call(evt, lambda_context), evt, 502, "backend_misconfigured")

    (item,) = deployments.all_jobs()
    assert item["status"]["S"] == "FAILED"
    assert deployments.locks.holder(ENDPOINT) is None


# ---------------------------------------------------------------------- registry versions
def package_event(arn: str, **changes) -> dict:
    return deployment_request("deployment-create-package", model_package_arn=arn, **changes)


def test_an_approved_registry_version_becomes_a_model_with_its_artifact(deployments, lambda_context):
    arn = register("iris", "job-" + "2" * 32, status="Approved", accuracy=0.97, description="ok")

    job = deploy(lambda_context, package_event(arn))

    details = deployments.store.get(job["id"]).details
    assert set(details) == PACKAGE_KEYS
    name = f"iris-v1-{job['id'][4:12]}"
    assert (details["model_name"], details["model_package_arn"], details["model_created"]) == (name, arn, True)
    assert details["variant_name"] == "iris-v1"
    assert (details["strategy"], details["weights"]) == ("linear", [25, 50, 75, 100])
    assert job["input_location"] == arn
    model = shared_client("sagemaker").describe_model(ModelName=name)
    package = shared_client("sagemaker").describe_model_package(ModelPackageName=arn)
    container = package["InferenceSpecification"]["Containers"][0]
    assert model["PrimaryContainer"]["Image"] == container["Image"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == container["ModelDataUrl"]
    assert model["ExecutionRoleArn"] == MODEL_ROLE
    (execution,) = deployments.executions(deployments.deployment_arn)
    assert deployments.execution_input(execution["executionArn"])["model_name"] == name


@pytest.mark.parametrize("status", ["Rejected", "PendingManualApproval"])
def test_a_version_that_is_not_approved_is_refused_saying_its_status(deployments, lambda_context, status):
    arn = register("iris", "job-" + "1" * 32, status=status, accuracy=0.6, description="below")
    evt = package_event(arn)

    error = assert_error(call(evt, lambda_context), evt, 409, "model_version_not_approved")

    assert status in error["message"]
    assert error["details"] == {"approval_status": status}
    assert nothing_created(deployments)
    models = [item["ModelName"] for item in shared_client("sagemaker").list_models()["Models"]]
    assert sorted(models) == ["sluice-iris-v1", "sluice-iris-v2"]  # no Model created from the version


def test_an_unknown_registry_version_is_404(deployments, lambda_context):
    evt = package_event(f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/iris/9")

    error = assert_error(call(evt, lambda_context), evt, 404, "registry_version_not_found")

    assert error["param"] == "body.model_package_arn"
    assert nothing_created(deployments)


# ---------------------------------------------------------------------- refused
@pytest.mark.parametrize(
    ("changes", "status", "code", "param", "words"),
    [
        ({"model": None}, 422, "validation_failed", "body.model", "Field required"),
        ({"model_name": None}, 422, "validation_failed", "body", "exactly one of model_name"),
        (
            {"model_package_arn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/iris/1"},
            422,
            "validation_failed",
            "body",
            "exactly one of model_name",
        ),
        ({"strategy": "yolo"}, 422, "validation_failed", "body.strategy", "canary"),
        ({"steps": [25, 5, 100]}, 422, "validation_failed", "body.steps", "steps must rise"),
        ({"steps": [5, 25]}, 422, "validation_failed", "body.steps", "the last step must be 100"),
        ({"steps": [0, 100]}, 422, "validation_failed", "body.steps", "above 0 and at most 100"),
        ({"steps": [50, 150]}, 422, "validation_failed", "body.steps", "above 0 and at most 100"),
        ({"strategy": "linear"}, 422, "validation_failed", "body.steps", "applies to strategy 'canary' only"),
        ({"split_percent": 10}, 422, "validation_failed", "body.split_percent", "strategy 'ab' only"),
        (
            {"linear_step_percent": 60, "strategy": "linear", "steps": None},
            422,
            "validation_failed",
            "body.linear_step_percent",
            "less than or equal to 50",
        ),
        (
            {"autoscaling": {"min": 5, "max": 2}},
            422,
            "validation_failed",
            "body.autoscaling",
            "min (5) is above max (2)",
        ),
        (
            {"linear_step_percent": 0.001, "strategy": "linear", "steps": None},
            422,
            "validation_failed",
            "body.linear_step_percent",
            "at least 10 percent",
        ),
        ({"autoscaling": {"min": 5}}, 422, "validation_failed", "body.autoscaling", "min (5) is above max (4)"),
        ({"bake_seconds": 0}, 422, "validation_failed", "body.bake_seconds", "greater than or equal to 1"),
        ({"guards": {"min_invocations": 0}}, 422, "validation_failed", "body.guards.min_invocations", "greater"),
        ({"guards": {"typo": 1}}, 422, "validation_failed", "body.guards.typo", "Extra inputs"),
        ({"approved_by": "me"}, 422, "validation_failed", "body.approved_by", "is not accepted"),
        ({"model_name": "sluice-iris-v9"}, 422, "validation_failed", "body.model_name", "no Model 'sluice-iris-v9'"),
        ({"variant_name": "v1"}, 422, "validation_failed", "body.variant_name", "already has a variant 'v1'"),
        ({"model": "claude-chat"}, 422, "validation_failed", "body.model", "Amazon Bedrock"),
        ({"model": "churn-async"}, 422, "validation_failed", "body.model", "asynchronous endpoint"),
        ({"model": "llama-sm"}, 422, "validation_failed", "body.model", "inference component"),
        ({"model": "churn-batch"}, 422, "validation_failed", "body.model", "does not exist in SageMaker"),
        ({"model": "nope"}, 404, "model_not_found", "model", "Model 'nope' does not exist"),
        ({"model": "private-model"}, 403, "model_not_allowed", "model", "not available"),
        (
            {"callback": {"sns_topic_arn": f"arn:aws:sns:us-east-1:{ACCOUNT}:acme-jobs"}},
            422,
            "validation_failed",
            "body.callback.sns_topic_arn",
            "not among the callback topics allowed",
        ),
    ],
)
def test_a_bad_deployment_request_is_refused_naming_the_field(
    deployments, lambda_context, changes, status, code, param, words
):
    evt = deployment_request(**changes)

    error = assert_error(call(evt, lambda_context), evt, status, code)

    assert error["param"] == param
    assert words in error["message"]
    assert nothing_created(deployments)


def test_the_default_variant_name_taken_on_the_endpoint_is_a_422_asking_for_one(deployments, lambda_context):
    shared_client("sagemaker").delete_endpoint(EndpointName=ENDPOINT)
    create_endpoint(ENDPOINT, "cfg-3", [("sluice-iris-v2", "sluice-iris-v2", "ml.m5.large", 1)])
    evt = event("deployment-create")

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body.variant_name"
    assert "the default, from the new version's name" in error["message"]


def test_an_endpoint_that_is_not_in_service_is_409_with_its_status(deployments, lambda_context, stubbed):
    sagemaker = stubbed("sagemaker")
    sagemaker.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}",
            "EndpointConfigName": BASELINE_CONFIG,
            "EndpointStatus": "Updating",
            "CreationTime": "2026-11-23T18:00:00Z",
            "LastModifiedTime": "2026-11-23T18:00:00Z",
        },
    )
    evt = event("deployment-create")

    error = assert_error(call(evt, lambda_context), evt, 409, "endpoint_not_in_service")

    assert "is Updating" in error["message"]
    assert error["details"] == {"endpoint_name": ENDPOINT, "endpoint_status": "Updating"}
    assert nothing_created(deployments)


@pytest.mark.parametrize("name", ["deployment-create", "deployment-rollback"])
@pytest.mark.parametrize("body", [None, "{}", "default"])
def test_a_consumer_cannot_deploy_or_roll_back_whatever_it_sends(deployments, lambda_context, name, body):
    evt = as_consumer(event(name) if body == "default" else event(name, body=body))

    error = assert_error(call(evt, lambda_context), evt, 403, "operator_required", "permission_error")

    assert error["details"]["role"] == "consumer"
    assert nothing_created(deployments)


def test_the_sample_events_are_an_operators(deployments):
    for name in ("deployment-create", "deployment-create-package", "deployment-rollback"):
        assert event(name)["requestContext"]["authorizer"]["role"] == "operator"


# ---------------------------------------------------------------------- rollback
def rollback_event(job_id: str, body="default") -> dict:
    evt = event("deployment-rollback") if body == "default" else event("deployment-rollback", body=body)
    old = evt["pathParameters"]["job_id"]
    evt["pathParameters"]["job_id"] = job_id
    evt["path"] = evt["path"].replace(old, job_id)
    evt["requestContext"]["path"] = evt["requestContext"]["path"].replace(old, job_id)
    return evt


def test_a_rollback_is_recorded_for_the_workflow_and_audited(deployments, lambda_context, caplog):
    job_id = deploy(lambda_context)["id"]
    deployments.store.transition(job_id, JobStatus.RUNNING)
    caplog.set_level(logging.INFO)

    response = call(rollback_event(job_id), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    view = body_of(response)
    assert view["status"] == "RUNNING"  # the workflow rolls back, then ends the job
    requested = view["details"]["rollback_requested"]
    assert (requested["by"], requested["reason"]) == ("platform", "p99 latency doubled on the dashboard")
    assert requested["at"]
    assert deployments.store.get(job_id).details["rollback_requested"] == requested
    (execution,) = deployments.executions(deployments.deployment_arn)
    assert execution["status"] == "RUNNING"
    (audit,) = [r for r in caplog.records if getattr(r, "audit", None) == "deployment" and r.what == "rollback"]
    assert (audit.who, audit.why, audit.job_id) == ("platform", "p99 latency doubled on the dashboard", job_id)


def test_a_second_rollback_keeps_the_first_reason(deployments, lambda_context):
    job_id = deploy(lambda_context)["id"]
    call(rollback_event(job_id), lambda_context)

    response = call(rollback_event(job_id, body={"reason": "again"}), lambda_context)

    assert response["statusCode"] == 202, response["body"]
    assert body_of(response)["details"]["rollback_requested"]["reason"] == "p99 latency doubled on the dashboard"


@pytest.mark.parametrize("final", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_rolling_back_a_finished_deployment_is_409_with_its_status(deployments, lambda_context, final):
    job_id = deploy(lambda_context)["id"]
    deployments.store.transition(job_id, final)
    evt = rollback_event(job_id)

    error = assert_error(call(evt, lambda_context), evt, 409, "deployment_finished")

    assert f"already {final.value}" in error["message"]
    assert error["details"] == {"status": final.value}
    assert "rollback_requested" not in deployments.store.get(job_id).details


def test_another_callers_deployment_or_a_job_of_another_kind_is_404(deployments, lambda_context):
    job_id = deploy(lambda_context)["id"]
    training = "job-" + "7" * 32
    deployments.store.create(
        Job(job_id=training, caller="platform", kind=JobKind.TRAINING, model="iris", input_location="s3://x/y/")
    )
    messages = []
    for evt in (
        as_caller(rollback_event(job_id), "ops-2"),
        rollback_event(training),
        rollback_event("job-" + "0" * 32),
    ):
        error = assert_error(call(evt, lambda_context), evt, 404, "job_not_found")
        messages.append(error["message"].replace(evt["pathParameters"]["job_id"], "X"))
    assert len(set(messages)) == 1
    assert "rollback_requested" not in deployments.store.get(job_id).details


@pytest.mark.parametrize(("body", "param"), [("{}", "body.reason"), ({"reason": ""}, "body.reason"), (None, "body")])
def test_a_rollback_needs_a_reason(deployments, lambda_context, body, param):
    job_id = deploy(lambda_context)["id"]
    evt = rollback_event(job_id, body=body)

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == param


# ---------------------------------------------------------------------- cancel
def cancel_event(job_id: str, caller: str = "platform") -> dict:
    evt = event("job-cancel")
    old = evt["pathParameters"]["job_id"]
    evt["pathParameters"]["job_id"] = job_id
    evt["path"] = evt["path"].replace(old, job_id)
    return as_caller(evt, caller)


def test_cancelling_a_running_deployment_keeps_its_workflow_and_asks_it_to_roll_back(deployments, lambda_context):
    job_id = deploy(lambda_context)["id"]
    deployments.store.transition(job_id, JobStatus.RUNNING)

    response = call(cancel_event(job_id), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    assert body_of(response)["status"] == "CANCELLED"
    details = deployments.store.get(job_id).details
    assert details["cancelled_by"] == "platform"
    assert (details["rollback_requested"]["by"], details["rollback_requested"]["reason"]) == ("platform", "cancelled")
    # The rollback runs in the workflow: its execution goes on.
    (execution,) = deployments.executions(deployments.deployment_arn)
    assert execution["status"] == "RUNNING"


def test_cancelling_a_deployment_that_never_ran_stops_its_execution(deployments, lambda_context):
    job_id = deploy(lambda_context, deployment_request(instance_type="ml.p3.2xlarge"))["id"]

    response = call(cancel_event(job_id), lambda_context)

    assert response["statusCode"] == 200, response["body"]
    # Waiting for an approval, it changed nothing on the endpoint: nothing to roll back.
    (execution,) = deployments.executions(deployments.deployment_arn)
    assert execution["status"] == "ABORTED"
    assert deployments.store.get(job_id).details["rollback_requested"]["reason"] == "cancelled"


def test_cancelling_another_kind_still_stops_its_execution(deployments, lambda_context):
    response = call(event("async-submit"), lambda_context)
    job_id = body_of(response)["id"]
    deployments.store.transition(job_id, JobStatus.RUNNING)

    assert call(cancel_event(job_id, "acme"), lambda_context)["statusCode"] == 200

    (execution,) = deployments.executions(deployments.async_arn)
    assert execution["status"] == "ABORTED"
    assert "rollback_requested" not in deployments.store.get(job_id).details


# ---------------------------------------------------------------------- the reaper
def reaped(deployments, job_id: str, baseline: str | None) -> Job:
    """The job's workflow stops without finishing it; the reaper looks once its RUNNING limit passed."""
    from sluice.jobs.reaper import reap_stuck_jobs

    deployments.store.transition(job_id, JobStatus.RUNNING)
    if baseline:
        deployments.store.merge_details(job_id, baseline_endpoint_config=baseline)
    execution = deployments.store.get(job_id).execution_id
    shared_client("stepfunctions").stop_execution(executionArn=execution, error="Manual", cause="console")
    later = datetime.now(UTC) + timedelta(seconds=hooks.running_limit_seconds() + 60)
    report = reap_stuck_jobs(deployments.store, max_jobs=10, now=later)
    assert [job.outcome for job in report.jobs] == ["reconciled"]
    return deployments.store.get(job_id)


def test_a_deployment_whose_workflow_died_on_its_baseline_fails_and_frees_the_endpoint(deployments, lambda_context):
    job_id = deploy(lambda_context)["id"]

    job = reaped(deployments, job_id, BASELINE_CONFIG)

    assert job.status == JobStatus.FAILED
    assert f"endpoint {ENDPOINT} runs its baseline config, {BASELINE_CONFIG}" in job.failure_reason
    assert job.details["reaped"]["actions"] == {"lock": "released"}
    assert "(baseline)" in job.details["reaped"]["found"]
    assert deployments.locks.holder(ENDPOINT) is None


def test_a_deployment_whose_workflow_died_mid_change_says_so_and_leaves_the_endpoint_alone(deployments, lambda_context):
    job_id = deploy(lambda_context)["id"]

    job = reaped(deployments, job_id, "sluice-iris-config-0")

    assert job.status == JobStatus.FAILED
    assert f"on config {BASELINE_CONFIG}, not its baseline sluice-iris-config-0" in job.failure_reason
    assert "update-endpoint" in job.failure_reason
    assert "not the baseline sluice-iris-config-0" in job.details["reaped"]["found"]
    # The reaper changes no endpoint.
    assert shared_client("sagemaker").describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"] == BASELINE_CONFIG
    assert deployments.locks.holder(ENDPOINT) is None


def test_a_running_deployment_is_looked_at_after_its_longest_bake_and_the_endpoint_updates(monkeypatch):
    set_setting(monkeypatch, "SLUICE_DEPLOYMENT_BAKE_SECONDS", "600")
    try:
        assert hooks.stale_after(JobStatus.RUNNING) == 600 * 3 + 3600
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert hooks.stale_after(JobStatus.QUEUED) == get_settings().reaper_queued_limit_minutes * 60
    assert hooks.HOOKS.stops_execution is False
    assert hooks.HOOKS.outputs(Job(job_id="j", caller="c", kind=JobKind.DEPLOYMENT, model="m", input_location="")) == {}


# ---------------------------------------------------------------------- docs
def test_the_openapi_document_lists_the_deployment_routes(lambda_context):
    spec = body_of(call(event("docs"), lambda_context))

    paths = spec["paths"]
    assert set(paths["/v1/deployments"]) == {"post"}
    assert set(paths["/v1/deployments/{job_id}/rollback"]) == {"post"}
    assert "202" in paths["/v1/deployments"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    assert {"DeploymentRequest", "GuardSpec", "AutoscalingSpec", "RollbackRequest"} <= set(schemas)


# ---------------------------------------------------------------------- template
SETTING_PARAMETERS = {
    "SLUICE_DEPLOYMENT_LINEAR_STEP_PERCENT": "DeploymentLinearStepPercent",
    "SLUICE_DEPLOYMENT_AB_SPLIT_PERCENT": "DeploymentAbSplitPercent",
    "SLUICE_DEPLOYMENT_BAKE_SECONDS": "DeploymentBakeSeconds",
    "SLUICE_GUARD_ERROR_RATE_PERCENT": "GuardErrorRatePercent",
    "SLUICE_GUARD_P99_LATENCY_MS": "GuardP99LatencyMs",
    "SLUICE_GUARD_LOW_CONFIDENCE_PERCENT": "GuardLowConfidencePercent",
    "SLUICE_GUARD_MIN_INVOCATIONS": "GuardMinInvocations",
    "SLUICE_GUARD_CONSECUTIVE_BREACHES": "GuardConsecutiveBreaches",
    "SLUICE_AUTOSCALING_MIN": "AutoscalingMin",
    "SLUICE_AUTOSCALING_MAX": "AutoscalingMax",
    "SLUICE_AUTOSCALING_TARGET_INVOCATIONS": "AutoscalingTargetInvocations",
    "SLUICE_AUTOSCALING_SCALE_IN_COOLDOWN": "AutoscalingScaleInCooldown",
    "SLUICE_AUTOSCALING_SCALE_OUT_COOLDOWN": "AutoscalingScaleOutCooldown",
}


def test_the_api_reads_every_deployment_default_from_a_stack_parameter_with_the_domains_default(template, resources):
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    settings = Settings()  # the code's own defaults

    for variable, parameter in SETTING_PARAMETERS.items():
        assert variables[variable] == {"Ref": parameter}, variable
        attribute = variable.removeprefix("SLUICE_").lower()
        assert float(template["Parameters"][parameter]["Default"]) == float(getattr(settings, attribute)), parameter
    assert variables["SLUICE_DEPLOYMENT_CANARY_STEPS"] == {"Fn::Join": [",", {"Ref": "DeploymentCanarySteps"}]}
    assert template["Parameters"]["DeploymentCanarySteps"]["Default"] == "5,25,100"
    assert variables["SLUICE_DEPLOYMENT_LOCKS_TABLE"] == {"Ref": "DeploymentLocksTable"}
    assert variables["SLUICE_DEPLOYMENT_MODEL_ROLE_ARN"] == {"Fn::GetAtt": ["SageMakerModelRole", "Arn"]}


def test_the_locks_table_is_keyed_by_endpoint_encrypted_and_recoverable(resources):
    table = resources["DeploymentLocksTable"]["Properties"]

    assert table["KeySchema"] == [{"AttributeName": "endpoint_name", "KeyType": "HASH"}]
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "SluiceKey"}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_the_api_passes_only_the_model_role_and_only_to_sagemaker(resources):
    statements = resources["ApiFunction"]["Properties"]["Policies"][0]["Statement"]
    (passing,) = [s for s in statements if isinstance(s, dict) and s.get("Action") == "iam:PassRole"]

    assert passing["Resource"] == {"Fn::GetAtt": ["SageMakerModelRole", "Arn"]}
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
