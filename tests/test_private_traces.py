"""Nothing private in traces: X-Ray never receives a handler's response (model outputs, presigned URLs) or error."""

from __future__ import annotations

import contextlib

import pytest
from aws_lambda_powertools import Tracer

CAPTURE_SWITCHES = ("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "POWERTOOLS_TRACER_CAPTURE_ERROR")


def _function_environment(template: dict, name: str) -> dict:
    global_vars = template["Globals"]["Function"]["Environment"]["Variables"]
    own = template["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {})
    return {**global_vars, **own}


def test_every_function_turns_off_tracer_response_and_error_capture(template):
    functions = [name for name, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"]
    assert functions

    for name in functions:
        environment = _function_environment(template, name)
        for switch in CAPTURE_SWITCHES:
            assert str(environment.get(switch)).lower() == "false", (name, switch)


class _Subsegment:
    def __init__(self) -> None:
        self.metadata: list[tuple] = []

    def put_metadata(self, key, value, namespace=None):
        self.metadata.append((key, value, namespace))

    def put_annotation(self, key, value):
        pass

    def add_exception(self, exception, stack):
        self.metadata.append(("exception", exception, None))


class _Provider:
    def __init__(self) -> None:
        self.subsegments: list[_Subsegment] = []

    @contextlib.contextmanager
    def in_subsegment(self, name=None, **_kwargs):
        segment = _Subsegment()
        self.subsegments.append(segment)
        yield segment

    def patch(self, *_args, **_kwargs):
        pass

    def patch_all(self, *_args, **_kwargs):
        pass


def test_traced_handler_does_not_put_presigned_url_or_error_into_trace_metadata(template, monkeypatch):
    environment = _function_environment(template, "ApiFunction")
    for switch in CAPTURE_SWITCHES:
        monkeypatch.setenv(switch, environment[switch])
    provider = _Provider()
    tracer = Tracer(service="sluice-test", provider=provider, auto_patch=False)
    try:

        @tracer.capture_lambda_handler
        def answers(_event, _context):
            return {"body": "https://bucket.s3.amazonaws.com/out?X-Amz-Signature=secret"}

        @tracer.capture_lambda_handler
        def fails(_event, _context):
            raise RuntimeError("backend said: account 123456789012")

        answers({}, None)
        with pytest.raises(RuntimeError):
            fails({}, None)
    finally:
        Tracer._reset_config()

    assert len(provider.subsegments) == 2
    assert all(segment.metadata == [] for segment in provider.subsegments)
