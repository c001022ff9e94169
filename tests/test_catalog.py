"""The model catalog: parsing a hand-edited document, the TTL store in front of SSM, and what the API does with it.

Parsing reports every problem with the path of the offending field. The store reads SSM once per TTL,
keeps serving the last good catalog when a new version is broken, and reports each broken version once;
with no good catalog at all, the API answers 503 catalog_invalid naming the fields to fix.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import pytest

from sluice.catalog.models import BedrockBackend, SageMakerBackend
from sluice.catalog.store import CatalogError, CatalogStore, dump_catalog, parse_catalog
from sluice.errors import CatalogInvalid
from tests.api_support import assert_error, body_of, call, event, store_catalog

PARAMETER = "/sluice/test/catalog"


def problems_of(document: dict | str) -> list[str]:
    raw = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(CatalogError) as caught:
        parse_catalog(raw)
    assert str(caught.value) == "; ".join(caught.value.problems)
    return caught.value.problems


def broken(document: dict, change) -> dict:
    copied = copy.deepcopy(document)
    change(copied)
    return copied


# --- parsing ----------------------------------------------------------------------------------------


def test_valid_catalog_parses_with_backends_limits_and_defaults(catalog_document):
    catalog = parse_catalog(json.dumps(catalog_document))

    assert sorted(catalog.models) == sorted(catalog_document["models"])
    claude = catalog.get("claude-chat")
    assert isinstance(claude.backend, BedrockBackend)
    assert claude.backend.model_id == "us.anthropic.claude-3-5-haiku-20241022-v1:0"
    assert claude.limits.max_input_tokens == 1000
    assert claude.pricing.output_per_1k_tokens == 0.004
    iris = catalog.get("iris")
    assert isinstance(iris.backend, SageMakerBackend)
    assert iris.backend.content_type == "application/json"  # default
    assert iris.backend.extra_content_types == ("text/csv",)
    assert iris.limits.timeout_seconds is None  # left to the stack default
    assert catalog.get("mme-churn").backend.target_model == "churn-v3.tar.gz"
    assert catalog.get("nope") is None


def test_caller_rules_are_shell_globs(catalog_document):
    catalog = parse_catalog(json.dumps(catalog_document))

    mme = catalog.get("mme-churn")
    assert mme.allows("acme")
    assert mme.allows("arn:aws:iam::123456789012:role/batch-scoring")
    assert not mme.allows("arn:aws:iam::123456789012:role/analytics")
    assert not mme.allows("globex")
    assert catalog.get("claude-chat").allows("anyone")


def test_a_dumped_catalog_parses_back_to_the_same_catalog(catalog_document):
    catalog = parse_catalog(json.dumps(catalog_document))

    assert parse_catalog(dump_catalog(catalog)) == catalog


def test_document_that_is_not_json_is_reported_as_such():
    (problem,) = problems_of('{"version": 1, "models": {')
    assert problem.startswith("(document): not valid JSON (EOF while parsing an object at line 1")


def test_document_that_is_not_an_object_is_reported():
    assert problems_of("[]") == ["(document): Input should be an object"]


def test_missing_required_field_names_its_path(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["iris"].pop("description"))

    assert problems_of(document) == ["models.iris.description: Field required"]


def test_wrong_type_names_its_path(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["iris"]["limits"].update(max_payload_bytes="1 MB"))

    (problem,) = problems_of(document)
    assert problem.startswith("models.iris.limits.max_payload_bytes: Input should be a valid integer")


def test_unknown_field_is_refused_as_a_typo(catalog_document):
    def typo(d):
        d["models"]["iris"]["allowed_caller"] = d["models"]["iris"].pop("allowed_callers")

    assert problems_of(broken(catalog_document, typo)) == [
        "models.iris.allowed_caller: Extra inputs are not permitted",
        "models.iris.allowed_callers: Field required",
    ]


def test_unknown_field_inside_a_backend_names_the_field_as_written(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["iris"]["backend"].update(endpoint_nmae="x"))

    assert problems_of(document) == ["models.iris.backend.endpoint_nmae: Extra inputs are not permitted"]


def test_bad_endpoint_name_names_its_path(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["iris"]["backend"].update(endpoint_name="sluice_iris"))

    (problem,) = problems_of(document)
    assert problem.startswith("models.iris.backend.endpoint_name: String should match pattern")


def test_embedding_model_without_embedding_format_is_refused(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["titan-embed"]["backend"].pop("embedding_format"))

    (problem,) = problems_of(document)
    assert problem.startswith("models.titan-embed: ")
    assert "backend.embedding_format is required" in problem


def test_embedding_model_on_sagemaker_is_refused(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["iris"].update(task="embedding"))

    (problem,) = problems_of(document)
    assert problem.startswith("models.iris: ")
    assert "use task 'predict'" in problem


def test_unknown_provider_names_the_backend(catalog_document):
    document = broken(catalog_document, lambda d: d["models"]["iris"]["backend"].update(provider="azure"))

    (problem,) = problems_of(document)
    assert problem.startswith("models.iris.backend: Input tag 'azure'")
    assert "'bedrock', 'sagemaker'" in problem


def test_bad_model_name_and_unknown_version_are_both_reported(catalog_document):
    def change(d):
        d["version"] = 2
        d["models"]["bad name!"] = d["models"].pop("iris")

    problems = problems_of(broken(catalog_document, change))

    assert problems[0] == "version: Input should be 1"
    assert problems[1].startswith("models.bad name!.[key]: String should match pattern")


def test_every_problem_in_a_document_is_reported_at_once(catalog_document):
    def change(d):
        d["models"]["iris"].pop("task")
        d["models"]["claude-chat"]["limits"]["timeout_seconds"] = 3600
        d["models"]["llama-sm"]["backend"]["chat_format"] = "tgi"

    problems = problems_of(broken(catalog_document, change))

    assert [problem.split(":")[0] for problem in problems] == [
        "models.claude-chat.limits.timeout_seconds",
        "models.iris.task",
        "models.llama-sm.backend.chat_format",
    ]


# --- the store: TTL, last good, reporting -----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeParameter:
    """What SSM would return for the parameter, one value at a time; counts reads."""

    def __init__(self, value: str | Exception) -> None:
        self.value = value
        self.reads: list[tuple[str, int]] = []

    def __call__(self, name: str, max_age: int) -> str:
        self.reads.append((name, max_age))
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def rejections(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.getMessage() == "model catalog rejected"]


@pytest.fixture
def good_raw(catalog_document) -> str:
    return json.dumps(catalog_document)


@pytest.fixture
def broken_raw(catalog_document) -> str:
    return json.dumps(broken(catalog_document, lambda d: d["models"]["iris"].pop("description")))


def test_store_reads_the_parameter_once_per_ttl(good_raw):
    ssm, clock = FakeParameter(good_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)

    first = store.get()
    for _ in range(50):
        assert store.get() is first
    clock.now += 299.9
    store.get()
    assert ssm.reads == [(PARAMETER, 300)]

    clock.now += 0.1
    store.get()
    assert len(ssm.reads) == 2


def test_store_serves_a_new_version_after_the_ttl(catalog_document, good_raw):
    ssm, clock = FakeParameter(good_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)
    assert "gpt-local" not in store.get().models
    updated = copy.deepcopy(catalog_document)
    updated["models"]["gpt-local"] = copy.deepcopy(updated["models"]["claude-chat"])
    ssm.value = json.dumps(updated)

    assert "gpt-local" not in store.get().models  # within the TTL
    clock.now += 300
    assert "gpt-local" in store.get().models


def test_invalidate_makes_the_next_get_read_again(good_raw):
    ssm = FakeParameter(good_raw)
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=FakeClock())
    store.get()

    store.invalidate()
    store.get()

    assert len(ssm.reads) == 2


def test_store_keeps_serving_the_last_good_catalog_when_a_new_version_is_broken(good_raw, broken_raw, caplog):
    ssm, clock = FakeParameter(good_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)
    good = store.get()

    ssm.value = broken_raw
    clock.now += 300

    assert store.get() is good
    (record,) = rejections(caplog)
    assert record.levelno == logging.ERROR
    assert record.problems == ["models.iris.description: Field required"]
    assert record.serving_last_good is True


def test_store_reports_each_broken_version_once(catalog_document, good_raw, broken_raw, caplog):
    ssm, clock = FakeParameter(good_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)
    store.get()
    ssm.value = broken_raw
    for _ in range(5):  # the same broken version, read again at each TTL
        clock.now += 300
        store.get()
    assert len(rejections(caplog)) == 1
    assert len(ssm.reads) == 6

    ssm.value = json.dumps(broken(catalog_document, lambda d: d["models"]["iris"].update(task="train")))
    clock.now += 300
    store.get()
    clock.now += 300
    store.get()

    assert len(rejections(caplog)) == 2
    assert rejections(caplog)[1].problems[0].startswith("models.iris.task:")


def test_store_emits_a_catalog_error_metric_per_report(good_raw, broken_raw, capsys):
    ssm, clock = FakeParameter(good_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)
    store.get()
    ssm.value = broken_raw
    clock.now += 300
    store.get()

    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"CatalogLoadErrors"' in line]

    assert len(metrics) == 1
    assert metrics[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Sluice"
    assert metrics[0]["CatalogLoadErrors"] == [1.0]


def test_store_with_no_good_catalog_raises_catalog_invalid_naming_the_fields(broken_raw):
    store = CatalogStore(PARAMETER, 300, fetch=FakeParameter(broken_raw), clock=FakeClock())

    with pytest.raises(CatalogInvalid) as caught:
        store.get()

    assert caught.value.status == 503
    assert caught.value.details == ["models.iris.description: Field required"]
    assert PARAMETER in caught.value.message


def test_a_broken_catalog_is_not_read_again_before_the_ttl(broken_raw, caplog):
    ssm = FakeParameter(broken_raw)
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=FakeClock())

    for _ in range(10):
        with pytest.raises(CatalogInvalid):
            store.get()

    assert len(ssm.reads) == 1
    assert len(rejections(caplog)) == 1


def test_store_recovers_when_the_broken_catalog_is_fixed(good_raw, broken_raw):
    ssm, clock = FakeParameter(broken_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)
    with pytest.raises(CatalogInvalid):
        store.get()

    ssm.value = good_raw
    clock.now += 300

    assert "iris" in store.get().models


def test_unreadable_parameter_keeps_the_last_good_catalog(good_raw):
    ssm, clock = FakeParameter(good_raw), FakeClock()
    store = CatalogStore(PARAMETER, 300, fetch=ssm, clock=clock)
    good = store.get()

    ssm.value = ConnectionError("SSM unreachable")
    clock.now += 300

    assert store.get() is good


def test_unreadable_parameter_without_a_good_catalog_says_why(caplog):
    store = CatalogStore(PARAMETER, 300, fetch=FakeParameter(ConnectionError("SSM unreachable")), clock=FakeClock())

    with pytest.raises(CatalogInvalid) as caught:
        store.get()

    assert caught.value.details == ["(parameter): could not be read: SSM unreachable"]
    assert len(rejections(caplog)) == 1


# --- the real path: SSM (moto) and the API ----------------------------------------------------------


def test_api_reads_the_catalog_from_ssm(catalog, lambda_context):
    from sluice.request import access

    assert os.environ["SLUICE_CATALOG_PARAMETER"] == PARAMETER
    assert sorted(access.current_catalog().models) == sorted(catalog["models"])

    response = call(event("model-get"), lambda_context)

    assert response["statusCode"] == 200
    assert body_of(response)["id"] == "iris"


def test_store_over_ssm_serves_a_new_version_once_its_own_ttl_ends(catalog):
    clock = FakeClock()
    store = CatalogStore(PARAMETER, 300, clock=clock)  # the real SSM fetch (Powertools parameters)
    assert "gpt-local" not in store.get().models
    catalog["models"]["gpt-local"] = copy.deepcopy(catalog["models"]["claude-chat"])
    store_catalog(catalog)

    clock.now += 300

    assert "gpt-local" in store.get().models


def test_api_answers_503_catalog_invalid_naming_fields_when_no_catalog_was_ever_good(
    aws, catalog_document, lambda_context
):
    def change(d):
        d["models"]["iris"]["backend"]["endpoint_name"] = "sluice_iris"
        d["models"]["titan-embed"]["backend"]["embedding_format"] = "word2vec"

    store_catalog(broken(catalog_document, change))
    evt = event("models-list")

    error = assert_error(call(evt, lambda_context), evt, 503, "catalog_invalid", "server_error")

    assert PARAMETER in error["message"]
    assert [problem.split(":")[0] for problem in error["details"]] == [
        "models.titan-embed.backend.embedding_format",
        "models.iris.backend.endpoint_name",
    ]


@pytest.mark.parametrize("name", ["model-get", "invoke-sagemaker", "chat-completions", "embeddings"])
def test_every_model_route_answers_503_while_the_catalog_is_invalid(aws, lambda_context, name):
    store_catalog({"version": 1, "models": {"iris": {"task": "predict"}}})
    evt = event(name)

    error = assert_error(call(evt, lambda_context), evt, 503, "catalog_invalid")

    assert "models.iris.description: Field required" in error["details"]


def test_api_answers_503_when_the_catalog_parameter_does_not_exist(aws, lambda_context):
    evt = event("models-list")

    error = assert_error(call(evt, lambda_context), evt, 503, "catalog_invalid")

    (problem,) = error["details"]
    assert problem.startswith("(parameter): could not be read")


def test_health_answers_even_when_the_catalog_is_invalid(aws, lambda_context):
    store_catalog({"models": "none"})

    assert call(event("health"), lambda_context)["statusCode"] == 200


def test_api_keeps_serving_the_last_good_catalog_from_ssm(catalog, catalog_document, lambda_context):
    from sluice.request import access

    assert call(event("model-get"), lambda_context)["statusCode"] == 200
    store_catalog(broken(catalog_document, lambda d: d["models"]["iris"].pop("task")))
    access.catalog_store().invalidate()  # as if the TTL had passed

    response = call(event("model-get"), lambda_context)

    assert response["statusCode"] == 200
    assert body_of(response)["task"] == "predict"
