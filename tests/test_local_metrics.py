"""Real metrics in the embedded CloudWatch: SageMaker's per-variant endpoint metrics from invocations through the
local runtime (the degraded model's errors included), and the functions' EMF metrics as CloudWatch extracts them."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sluice_local import emf
from sluice_local.metric_sink import MetricSink
from sluice_local.models import start_model
from sluice_local.runtime_metrics import attach
from sluice_local.sagemaker_runtime import LocalSageMakerRuntime, Variant

SETOSA = [5.1, 3.5, 1.4, 0.2]
ENDPOINT = "ep-metrics"


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture(scope="module")
def cloudwatch(moto) -> Any:
    return _client("cloudwatch", moto.url)


@pytest.fixture(scope="module")
def sink(cloudwatch) -> Iterator[MetricSink]:
    # A long interval: the tests flush when they read, so nothing depends on timing.
    sink = MetricSink(cloudwatch, flush_seconds=60).start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def degraded(tmp_path_factory) -> Iterator[Any]:
    model = start_model("degraded", tmp_path_factory.mktemp("degraded"))
    yield model
    model.stop()


@pytest.fixture(scope="module")
def runtime(models, degraded, sink) -> Iterator[Any]:
    variants = {ENDPOINT: [Variant("baseline", 1, models["v2"].url), Variant("canary", 1, degraded.url)]}
    server = LocalSageMakerRuntime(variants.get, rng=random.Random(3), metrics=attach(sink))
    server.start()
    yield _client("sagemaker-runtime", server.url)
    server.stop()


def _query(cloudwatch: Any, namespace: str, name: str, stat: str, dimensions: dict[str, str]) -> float | None:
    now = datetime.now(UTC)
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "q",
                "MetricStat": {
                    "Metric": {
                        "Namespace": namespace,
                        "MetricName": name,
                        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
                    },
                    "Period": 600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=5),
    )
    values = answer["MetricDataResults"][0]["Values"]
    return values[0] if values else None


def test_invocations_are_counted_per_variant_with_errors_and_latency(runtime, sink, cloudwatch):
    outcomes = {"baseline": [0, 0], "canary": [0, 0]}  # [answers, model errors]
    statuses = set()
    for _ in range(30):
        for variant in ("baseline", "canary"):
            try:
                runtime.invoke_endpoint(
                    EndpointName=ENDPOINT,
                    Body=json.dumps({"instances": [SETOSA]}),
                    ContentType="application/json",
                    TargetVariant=variant,
                )
                outcomes[variant][0] += 1
            except runtime.exceptions.ModelError as error:
                statuses.add(error.response["OriginalStatusCode"])
                outcomes[variant][1] += 1
    sink.flush()

    def stat(variant: str, name: str, statistic: str) -> float | None:
        dimensions = {"EndpointName": ENDPOINT, "VariantName": variant}
        return _query(cloudwatch, "AWS/SageMaker", name, statistic, dimensions)

    # The degraded model fails every third request it answers.
    assert outcomes == {"baseline": [30, 0], "canary": [20, 10]}
    assert statuses == {500}
    assert stat("baseline", "Invocations", "Sum") == 30
    assert stat("canary", "Invocations", "Sum") == 30
    assert stat("baseline", "Invocation5XXErrors", "Sum") == 0
    assert stat("canary", "Invocation5XXErrors", "Sum") == 10
    assert stat("canary", "Invocation5XXErrors", "Average") == pytest.approx(1 / 3)
    assert stat("canary", "Invocation4XXErrors", "Sum") == 0
    # Microseconds: a local model answers within a few ms, never in under 10 µs.
    p99 = stat("baseline", "ModelLatency", "p99")
    assert p99 is not None
    assert 10 < p99 < 2_000_000
    assert stat("baseline", "ModelLatency", "SampleCount") == 30
    assert stat("canary", "ModelLatency", "SampleCount") == 30
    assert stat("baseline", "OverheadLatency", "SampleCount") == 30


def test_a_model_client_error_is_a_4xx_of_its_variant(runtime, sink, cloudwatch):
    with pytest.raises(runtime.exceptions.ModelError):
        runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            Body=b'{"instances": [[1]]}',
            ContentType="application/json",
            TargetVariant="baseline",
        )
    sink.flush()

    dimensions = {"EndpointName": ENDPOINT, "VariantName": "baseline"}
    assert _query(cloudwatch, "AWS/SageMaker", "Invocation4XXErrors", "Sum", dimensions) == 1


def test_stop_flushes_what_was_recorded(moto, models):
    cloudwatch = _client("cloudwatch", moto.url)
    sink = MetricSink(cloudwatch, flush_seconds=60).start()
    server = LocalSageMakerRuntime({"ep-stop": [Variant("only", 1, models["v1"].url)]}.get, metrics=attach(sink))
    server.start()
    try:
        _client("sagemaker-runtime", server.url).invoke_endpoint(
            EndpointName="ep-stop", Body=json.dumps({"instances": [SETOSA]}), ContentType="application/json"
        )
    finally:
        server.stop()
        sink.stop()

    dimensions = {"EndpointName": "ep-stop", "VariantName": "only"}
    assert _query(cloudwatch, "AWS/SageMaker", "Invocations", "Sum", dimensions) == 1


# --- the functions' EMF metrics ----------------------------------------------------------------------------------


def test_an_emf_document_is_extracted_per_dimension_set_and_metric():
    document = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "Sluice",
                    "Dimensions": [["service", "model"], ["service"], ["missing"]],
                    "Metrics": [{"Name": "Latency", "Unit": "Milliseconds"}, {"Name": "Gone", "Unit": "Count"}],
                }
            ],
        },
        "service": "sluice",
        "model": "iris",
        "Latency": [12.5, 30.0],
    }

    data = emf.extract(json.dumps(document))

    assert [(namespace, datum["Dimensions"]) for namespace, datum in data] == [
        ("Sluice", [{"Name": "service", "Value": "sluice"}, {"Name": "model", "Value": "iris"}]),
        ("Sluice", [{"Name": "service", "Value": "sluice"}]),
    ]
    assert all(datum["Values"] == [12.5, 30.0] and datum["Unit"] == "Milliseconds" for _, datum in data)
    assert data[0][1]["Timestamp"] == datetime.fromtimestamp(1_700_000_000, UTC)
    assert emf.extract("not json") == []
    assert emf.extract('{"message": "a plain log line"}') == []


def test_powertools_metrics_reach_the_embedded_cloudwatch(cloudwatch, capsys):
    from sluice.telemetry import metrics, record_error, record_invocation

    sink = MetricSink(cloudwatch, flush_seconds=60)
    undo = emf.install(sink)
    try:
        for latency in (10.0, 20.0, 300.0):
            # As one API request does: its metric set, flushed when the handler returns (@log_metrics).
            record_invocation(
                model="iris-emf",
                provider="sagemaker",
                variant="canary",
                latency_ms=latency,
                backend_latency_ms=None,
                input_tokens=None,
                output_tokens=None,
                cost_usd=None,
            )
            metrics.flush_metrics()
        record_error(code="model_error", status=502, model="iris-emf", provider="sagemaker")
    finally:
        undo()
    sink.flush()

    dimensions = {"service": "sluice", "model": "iris-emf", "provider": "sagemaker", "variant": "canary"}
    assert _query(cloudwatch, "Sluice", "Invocations", "Sum", dimensions) == 3
    assert _query(cloudwatch, "Sluice", "Latency", "p99", dimensions) == 300.0
    errors = {"model": "iris-emf", "provider": "sagemaker", "error_code": "model_error", "status_class": "5xx"}
    assert _query(cloudwatch, "Sluice", "Errors", "Sum", {"service": "sluice", **errors}) == 1
    # The lines are still printed, as on Lambda.
    assert '"_aws"' in capsys.readouterr().out
