"""Sync-path overhead: Sluice's API handler versus calling the backend directly with boto3.

Both run in this process against the same loopback backend, so the difference in p50 is what
Sluice adds (routing, validation, limits, metrics, logging). Budget: about 0.6 ms at p50.
X-Ray tracing is off here (no daemon); on AWS the Tracer adds its subsegment cost on top.

    make bench        (or: .venv/bin/python benchmarks/sync_overhead.py [iterations])
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sluice"), str(ROOT / "functions" / "api"), str(ROOT / "benchmarks")]
os.environ.update(
    AWS_DEFAULT_REGION="us-east-1",
    AWS_ACCESS_KEY_ID="bench",
    AWS_SECRET_ACCESS_KEY="bench",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_SERVICE_NAME="sluice",
    POWERTOOLS_METRICS_NAMESPACE="Sluice",
)

import _loopback  # noqa: E402

SERVER, URL = _loopback.start()
os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = URL
os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = URL

import app  # noqa: E402
import boto3  # noqa: E402

from sluice.catalog.store import CatalogStore  # noqa: E402
from sluice.request import access  # noqa: E402

CATALOG = {
    "models": {
        "iris": {
            "description": "bench",
            "task": "predict",
            "backend": {"provider": "sagemaker", "endpoint_name": "sluice-iris"},
            "pricing": {"instance_hourly_usd": 0.1},
            # The loopback answers {"predictions": [[...]]}: confidence is read on every call, as in production.
            "confidence": {"kind": "max_probability", "path": "predictions[*]"},
            "allowed_callers": ["*"],
        },
        "chat": {
            "description": "bench",
            "task": "chat",
            "backend": {"provider": "bedrock", "model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"},
            "limits": {"max_input_tokens": 1000, "max_output_tokens": 512},
            "pricing": {"input_per_1k_tokens": 0.0008, "output_per_1k_tokens": 0.004},
            "allowed_callers": ["*"],
        },
    }
}
STORE = CatalogStore("/bench/catalog", 300, fetch=lambda *_: json.dumps(CATALOG))
access.catalog_store = lambda: STORE
CONTEXT = SimpleNamespace(
    function_name="bench",
    memory_limit_in_mb=1024,
    invoked_function_arn="arn:aws:lambda:us-east-1:1:function:bench",
    aws_request_id="bench",
)
PREDICT_BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
CHAT_BODY = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64})


def event(path: str, body: str) -> dict:
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "body": body,
        "isBase64Encoded": False,
        "headers": {"Content-Type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"requestId": "bench", "stage": "v1", "authorizer": {"tenant": "bench"}, "identity": {}},
    }


def timed_pair(direct, through, iterations: int) -> tuple[list[float], list[float]]:
    """Alternate the two calls so machine noise and drift hit both equally."""
    for _ in range(50):
        direct()
        through()
    first, second = [], []
    for _ in range(iterations):
        for call, samples in ((direct, first), (through, second)):
            started = time.perf_counter()
            call()
            samples.append((time.perf_counter() - started) * 1000)
    return first, second


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1]


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sagemaker = boto3.client("sagemaker-runtime")
    bedrock = boto3.client("bedrock-runtime")
    cases = {
        "sagemaker invoke": (
            lambda: sagemaker.invoke_endpoint(
                EndpointName="sluice-iris", Body=PREDICT_BODY, ContentType="application/json"
            )["Body"].read(),
            lambda: app.lambda_handler(event("/v1/models/iris/invoke", PREDICT_BODY), CONTEXT),
        ),
        "bedrock chat": (
            lambda: bedrock.converse(
                modelId="anthropic.claude-3-5-haiku-20241022-v1:0",
                messages=[{"role": "user", "content": [{"text": "Hello"}]}],
                inferenceConfig={"maxTokens": 64},
            ),
            lambda: app.lambda_handler(event("/v1/chat/completions", CHAT_BODY), CONTEXT),
        ),
    }
    print(f"{'case':<18}{'direct p50':>12}{'sluice p50':>12}{'added p50':>11}{'added p95':>11}  (ms, n={iterations})")
    # Logs and EMF metrics are part of the cost, but go to /dev/null rather than the terminal.
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            results = {name: timed_pair(direct, through, iterations) for name, (direct, through) in cases.items()}
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
    for name, (direct, through) in results.items():
        print(
            f"{name:<18}{pct(direct, 50):>12.3f}{pct(through, 50):>12.3f}"
            f"{pct(through, 50) - pct(direct, 50):>11.3f}{pct(through, 95) - pct(direct, 95):>11.3f}"
        )
    print(own_time(iterations))
    SERVER.shutdown()


def own_time(iterations: int) -> str:
    """Sluice's own work per request: the backend call replaced by an instant canned answer."""
    from sluice.inference import invoke as invoke_module
    from sluice.providers.result import BackendResult

    canned = BackendResult(body=_loopback.PREDICTION, content_type="application/json", backend_latency_ms=0.0)
    real = invoke_module.sagemaker.invoke_endpoint
    invoke_module.sagemaker.invoke_endpoint = lambda *_, **__: canned
    request = event("/v1/models/iris/invoke", PREDICT_BODY)
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            samples, _ = timed_pair(lambda: app.lambda_handler(request, CONTEXT), lambda: None, iterations)
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            invoke_module.sagemaker.invoke_endpoint = real
    return f"sluice's own work (instant backend): p50 {pct(samples, 50):.3f} ms, p95 {pct(samples, 95):.3f} ms"


if __name__ == "__main__":
    main()
