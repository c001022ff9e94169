"""What a request leaves behind: EMF metrics per model/provider/variant, and logs without bodies."""

from __future__ import annotations

import json
import logging

import pytest

from sluice.settings import get_settings
from tests.api_support import call, event, sagemaker_answer
from tests.conftest import load_handler

SECRET_FEATURES = "[[5.1, 3.5, 1.4, 0.2]]"


def _emitted(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _invoke_iris(stubbed, lambda_context) -> dict:
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint", sagemaker_answer({"predictions": [[0.9, 0.05, 0.05]]}, variant="blue")
    )
    evt = event("invoke-sagemaker", body='{"instances": ' + SECRET_FEATURES + "}")
    return call(evt, lambda_context)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records():
    """Every record the service logger writes (Powertools may not propagate to the root logger)."""
    load_handler("api")
    service_logger = logging.getLogger("sluice")
    handler = _Records()
    service_logger.addHandler(handler)
    yield handler.records
    service_logger.removeHandler(handler)


@pytest.fixture
def log_bodies(monkeypatch):
    def turn_on() -> None:
        monkeypatch.setenv("SLUICE_LOG_BODIES", "true")
        get_settings.cache_clear()

    yield turn_on
    get_settings.cache_clear()


def test_successful_invoke_emits_metrics_per_model_provider_and_variant(catalog, stubbed, lambda_context, capfd):
    assert _invoke_iris(stubbed, lambda_context)["statusCode"] == 200

    emf = [line for line in _emitted(capfd.readouterr().out) if "_aws" in line]
    request_metrics = next(line for line in emf if "Invocations" in line)
    assert request_metrics["model"] == "iris"
    assert request_metrics["provider"] == "sagemaker"
    assert request_metrics["variant"] == "blue"
    names = {metric["Name"] for metric in request_metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"Invocations", "Latency", "BackendLatency", "EstimatedCostUSD"} <= names
    assert request_metrics["EstimatedCostUSD"][0] > 0


def test_failed_request_counts_an_error_by_class(catalog, stubbed, lambda_context, capfd):
    stubbed("sagemaker-runtime").add_client_error("invoke_endpoint", "ThrottlingException", "slow down")
    assert call(event("invoke-sagemaker"), lambda_context)["statusCode"] == 429

    errors = [line for line in _emitted(capfd.readouterr().out) if "Errors" in line and "_aws" in line]
    assert len(errors) == 1
    assert errors[0]["error_code"] == "throttled"
    assert errors[0]["status_class"] == "4xx"
    assert errors[0]["model"] == "iris"


def test_bodies_stay_out_of_the_logs_by_default(catalog, stubbed, lambda_context, records):
    assert _invoke_iris(stubbed, lambda_context)["statusCode"] == 200

    assert "inference served" in [record.getMessage() for record in records]  # the request was logged...
    # Every field of every record, extras included.
    text = "\n".join(json.dumps(vars(record), default=str) for record in records)
    assert "5.1, 3.5" not in text  # ...but neither its body
    assert "0.05" not in text  # nor the model's answer


def test_bodies_are_logged_when_the_debug_flag_is_on(catalog, stubbed, lambda_context, records, log_bodies):
    log_bodies()
    assert _invoke_iris(stubbed, lambda_context)["statusCode"] == 200

    logs = [record for record in records if record.getMessage() in ("request body", "response body")]
    assert [record.getMessage() for record in logs] == ["request body", "response body"]
    assert SECRET_FEATURES in logs[0].body
    assert "0.05" in logs[1].body
