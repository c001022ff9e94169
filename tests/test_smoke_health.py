"""Health answers without credentials or backends."""

from tests.conftest import load_event, load_handler


def test_health_answers_without_backend(lambda_context):
    api = load_handler("api")
    response = api.lambda_handler(load_event("api/health.json"), lambda_context)
    assert response["statusCode"] == 200
    assert '"status":"ok"' in response["body"]
