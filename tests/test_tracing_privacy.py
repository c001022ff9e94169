"""Nothing private in traces: the handlers' responses and errors never become X-Ray metadata."""

from __future__ import annotations

import pytest
from aws_lambda_powertools import Tracer
from samtranslator.yaml_helper import yaml_parse

from tests.conftest import ROOT

SECRET_ANSWER = {
    "output": "model says the patient has ...",
    "url": "https://bucket.s3.amazonaws.com/x?X-Amz-Signature=s",
}


class RecordingProvider:
    """An X-Ray provider that records what the tracer would send."""

    def __init__(self) -> None:
        self.metadata: list[tuple[str, object]] = []
        self.exceptions: list[BaseException] = []

    def in_subsegment(self, name=None, **kwargs):
        provider = self

        class Subsegment:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def put_metadata(self, key, value, namespace=None):
                provider.metadata.append((key, value))

            def put_annotation(self, key, value):
                pass

            def add_exception(self, exception, stack=None, remote=False):
                provider.exceptions.append(exception)

        return Subsegment()

    def put_annotation(self, *args, **kwargs):
        pass

    def put_metadata(self, *args, **kwargs):
        pass

    def patch(self, *args, **kwargs):
        pass

    def patch_all(self, *args, **kwargs):
        pass


def tracer_environment() -> dict[str, str]:
    template = yaml_parse((ROOT / "template.yaml").read_text())
    return {key: str(value) for key, value in template["Globals"]["Function"]["Environment"]["Variables"].items()}


def traced(provider: RecordingProvider):
    tracer = Tracer(service="sluice", provider=provider, disabled=False, auto_patch=False)

    @tracer.capture_lambda_handler
    def handler(event, context):
        if event.get("fail"):
            raise ValueError("request body was: secret prompt")
        return SECRET_ANSWER

    return handler


@pytest.fixture
def lambda_environment(monkeypatch):
    # Tracer only traces inside Lambda.
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "sluice-api")
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    yield monkeypatch
    # Tracer keeps its configuration on the class: leave none of this test's behind.
    Tracer._reset_config()


def test_a_traced_handler_does_not_put_model_outputs_or_presigned_urls_into_xray(lambda_environment):
    for key, value in tracer_environment().items():
        lambda_environment.setenv(key, value)
    provider = RecordingProvider()

    assert traced(provider)({}, None) == SECRET_ANSWER
    with pytest.raises(ValueError, match="secret prompt"):
        traced(provider)({"fail": True}, None)

    assert "X-Amz-Signature" not in repr(provider.metadata)
    assert "secret prompt" not in repr(provider.metadata)
    assert provider.exceptions == []


def test_without_the_stacks_setting_the_tracer_would_capture_the_response(lambda_environment):
    """The control: Powertools' default is to capture, so the setting is what keeps traces clean."""
    lambda_environment.delenv("POWERTOOLS_TRACER_CAPTURE_RESPONSE", raising=False)
    provider = RecordingProvider()

    traced(provider)({}, None)

    assert "X-Amz-Signature" in repr(provider.metadata)


def test_no_function_turns_response_or_error_capture_back_on():
    template = yaml_parse((ROOT / "template.yaml").read_text())
    assert tracer_environment()["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"
    assert tracer_environment()["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false"
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        variables = (resource["Properties"].get("Environment") or {}).get("Variables") or {}
        for key in ("POWERTOOLS_TRACER_CAPTURE_RESPONSE", "POWERTOOLS_TRACER_CAPTURE_ERROR"):
            assert variables.get(key, "false") == "false", name
