"""The local API Gateway: routes, authorizer and gateway responses read from template.yaml."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from sluice_local.api_routes import load_api
from sluice_local.gateway import LocalApiGateway
from tests.conftest import ROOT

KEY = "sk-sluice-local-test"


class Functions:
    """Stands in for the in-process Lambda runner: records events, answers like the real functions."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, function: str, event: dict) -> dict:
        self.calls.append((function, event))
        if function == "AuthorizerFunction":
            if event["headers"].get("Authorization") != f"Bearer {KEY}":
                return {"errorType": "Unauthorized", "errorMessage": "Unauthorized"}
            return {
                "principalId": "acme",
                "policyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Action": "execute-api:Invoke",
                            "Resource": "arn:aws:execute-api:us-east-1:123456789012:local/dev/*",
                        }
                    ],
                },
                "context": {"tenant": "acme", "key_id": "key_1"},
            }
        if event["path"] == "/v1/boom":
            raise RuntimeError("function crashed")
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"path": event["path"]}),
        }

    def of(self, function: str) -> list[dict]:
        return [event for name, event in self.calls if name == function]


@pytest.fixture
def api():
    return load_api(ROOT / "template.yaml", "PublicApi")


@pytest.fixture
def gateway(api):
    functions = Functions()
    return LocalApiGateway(api, functions, region="us-east-1"), functions


def test_routes_and_authorizer_come_from_the_template(api):
    routes = {(route.method, route.path): route for route in api.routes}
    assert ("GET", "/v1/health") in routes
    assert ("POST", "/v1/models/{model}/invoke") in routes
    assert routes[("GET", "/v1/health")].authorizer is None
    invoke = routes[("POST", "/v1/chat/completions")]
    assert invoke.function == "ApiFunction"
    assert invoke.authorizer.function == "AuthorizerFunction"
    assert invoke.authorizer.cache_ttl_seconds == 60
    assert api.stage == "dev"
    assert "UNAUTHORIZED" in api.gateway_responses


def test_health_needs_no_key_and_reaches_the_function_as_a_proxy_event(gateway):
    gw, functions = gateway
    status, _, body = gw.handle("GET", "/v1/health", {"User-Agent": "curl"}, b"", "127.0.0.1")
    assert status == 200
    assert json.loads(body) == {"path": "/v1/health"}
    event = functions.of("ApiFunction")[0]
    assert event["resource"] == "/v1/health"
    assert event["requestContext"]["stage"] == "dev"
    assert functions.of("AuthorizerFunction") == []


def test_missing_key_is_a_401_in_the_openai_error_shape_without_calling_the_authorizer(gateway):
    gw, functions = gateway
    status, headers, body = gw.handle("GET", "/v1/models", {}, b"", "127.0.0.1")
    assert status == 401
    error = json.loads(body)["error"]
    assert error["code"] == "unauthenticated"
    assert error["request_id"] == headers["x-amzn-RequestId"]
    assert functions.calls == []


def test_bad_key_is_a_401_and_a_good_key_passes_the_tenant_to_the_function(gateway):
    gw, functions = gateway
    status, _, _ = gw.handle("GET", "/v1/models", {"Authorization": "Bearer wrong"}, b"", "127.0.0.1")
    assert status == 401
    status, _, _ = gw.handle(
        "POST", "/v1/models/iris/invoke", {"Authorization": f"Bearer {KEY}"}, b'{"instances": []}', "127.0.0.1"
    )
    assert status == 200
    event = functions.of("ApiFunction")[-1]
    assert event["pathParameters"] == {"model": "iris"}
    assert event["requestContext"]["authorizer"]["tenant"] == "acme"
    assert event["requestContext"]["authorizer"]["principalId"] == "acme"
    assert event["body"] == '{"instances": []}'


def test_authorizer_decisions_are_cached_for_the_templates_ttl(gateway):
    gw, functions = gateway
    for _ in range(3):
        gw.handle("GET", "/v1/models", {"Authorization": f"Bearer {KEY}"}, b"", "127.0.0.1")
    assert len(functions.of("AuthorizerFunction")) == 1
    assert len(functions.of("ApiFunction")) == 3


def test_unknown_route_gets_api_gateways_403(gateway):
    gw, functions = gateway
    status, _, body = gw.handle("GET", "/v2/nothing", {"Authorization": f"Bearer {KEY}"}, b"", "127.0.0.1")
    assert status == 403
    assert "Missing Authentication Token" in json.loads(body)["error"]["message"]
    assert functions.calls == []


def test_served_over_http(gateway):
    gw, _ = gateway
    server = gw.serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with urllib.request.urlopen(f"{url}/v1/health") as response:
            assert json.loads(response.read()) == {"path": "/v1/health"}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/v1/models")
        assert refused.value.code == 401
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("method", ["PATCH", "DELETE", "OPTIONS", "PUT", "TRACE", "BREW"])
@pytest.mark.parametrize("path", ["/v1/models", "/v1/nothing", "//", "/v1/models/%zz/invoke"])
def test_unknown_method_is_api_gateway_403_not_501_html(gateway, method, path):
    import http.client

    gw, functions = gateway
    server = gw.serve("127.0.0.1", 0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
        response = connection.getresponse()
        body = response.read()
        connection.close()
    finally:
        server.shutdown()
        server.server_close()

    assert response.status == 403, body
    assert response.getheader("Content-Type") == "application/json"
    assert "Missing Authentication Token" in json.loads(body)["error"]["message"]
    assert not [call for call in functions.calls if call[0] == "ApiFunction"]


def test_head_of_an_unknown_route_is_403_without_a_body(gateway):
    import http.client

    gw, _ = gateway
    server = gw.serve("127.0.0.1", 0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request("HEAD", "/v1/models")
        response = connection.getresponse()
        assert response.status == 403
        assert response.read() == b""
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
