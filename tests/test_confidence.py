"""Prediction confidence: where a catalog entry says it lives, how an answer's predictions are counted
against ConfidenceThreshold, the metrics the deployment guard reads per variant, and the standing alarm.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

from sluice.catalog.store import CatalogError, parse_catalog
from sluice.inference.confidence import EACH, ConfidenceCount, compile_path, count, values_at
from sluice.settings import get_settings
from tests.api_support import call, event, sagemaker_answer, store_catalog

IRIS_ANSWER = {
    "predictions": [
        {"label": "setosa", "probabilities": {"setosa": 0.985, "versicolor": 0.015, "virginica": 6.2e-08}},
        {"label": "virginica", "probabilities": {"setosa": 0.01, "versicolor": 0.44, "virginica": 0.55}},
        {"label": "versicolor", "probabilities": {"setosa": 0.0, "versicolor": 0.7, "virginica": 0.3}},
    ],
    "model_version": "v2",
}
PROBABILITIES = compile_path("predictions[*].probabilities")
SCORES = compile_path("predictions[*].score")


# --- the path -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("predictions[*].probabilities", ("predictions", EACH, "probabilities")),
        ("$.predictions[*].score", ("predictions", EACH, "score")),
        ("[*].score", (EACH, "score")),
        ("outputs.scores[*][*]", ("outputs", "scores", EACH, EACH)),
        ("model-output.top_score", ("model-output", "top_score")),
    ],
)
def test_a_path_compiles_to_keys_and_list_steps(path, steps):
    assert compile_path(path) == steps


@pytest.mark.parametrize("path", ["", "$", "predictions..score", "predictions[0].score", "a.[*]", "a b", "a[*", "*"])
def test_a_path_outside_the_small_syntax_is_refused(path):
    with pytest.raises(ValueError, match=r"empty|segment"):
        compile_path(path)


def test_values_are_read_through_nested_lists_and_missing_fields_reach_nothing():
    document = {"outputs": [{"scores": [[0.1, 0.2], [0.3]]}, {"scores": "not a list"}, {"other": 1}, 7]}

    assert values_at(document, compile_path("outputs[*].scores[*][*]")) == [0.1, 0.2, 0.3]
    assert values_at(document, compile_path("outputs[*].missing")) == []
    assert values_at(["a", "b"], compile_path("[*]")) == ["a", "b"]
    assert values_at({"predictions": {"score": 1}}, SCORES) == []  # [*] over a non-list reaches nothing


# --- reading and counting -----------------------------------------------------------------------------


def test_max_probability_reads_the_highest_value_of_each_map_or_list():
    assert count(PROBABILITIES, "max_probability", IRIS_ANSWER, 0.7) == ConfidenceCount(predictions=3, low=1)
    # Lists of probabilities (one list per row), as many containers answer.
    rows = {"predictions": [[0.97, 0.02, 0.01], [0.4, 0.35, 0.25]]}
    assert count(compile_path("predictions[*]"), "max_probability", rows, 0.7) == ConfidenceCount(2, 1)


def test_non_numbers_are_ignored_and_a_prediction_without_any_number_is_not_counted():
    answer = {
        "predictions": [
            {"probabilities": {"a": "0.99", "b": True, "c": None, "d": 0.6}},  # only 0.6 is a number
            {"probabilities": {"a": "high", "b": False}},  # nothing readable: not a prediction counted
            {"probabilities": [math.nan, math.inf, 0.9]},  # neither NaN nor infinity is a reading
            {"label": "no probabilities at all"},
        ]
    }

    assert count(PROBABILITIES, "max_probability", answer, 0.7) == ConfidenceCount(predictions=2, low=1)


def test_score_reads_each_number_the_path_reaches():
    answer = {"predictions": [{"score": 0.91}, {"score": 0.2}, {"score": "0.1"}, {"score": True}, {}, {"score": 7}]}

    assert count(SCORES, "score", answer, 0.7) == ConfidenceCount(predictions=3, low=1)


@pytest.mark.parametrize("answer", [{}, {"predictions": []}, {"predictions": [{"score": "n/a"}]}, "text", None, 3])
def test_an_answer_without_a_readable_confidence_counts_nothing(answer):
    assert count(SCORES, "score", answer, 0.7) is None


def test_the_threshold_is_strict_and_decides_what_is_low():
    answer = {"predictions": [{"score": 0.7}, {"score": 0.69}, {"score": 0.95}]}

    assert count(SCORES, "score", answer, 0.7) == ConfidenceCount(3, 1)  # 0.7 itself is not below 0.7
    assert count(SCORES, "score", answer, 0.96) == ConfidenceCount(3, 3)
    assert count(SCORES, "score", answer, 0.0) == ConfidenceCount(3, 0)


# --- the catalog --------------------------------------------------------------------------------------


def _with_confidence(document: dict, model: str, spec: object) -> str:
    changed = copy.deepcopy(document)
    changed["models"][model]["confidence"] = spec
    return json.dumps(changed)


def test_the_iris_entries_declare_max_probability_over_their_probabilities(catalog_document):
    from tests.conftest import ROOT

    local = parse_catalog((ROOT / "local" / "catalog.json").read_text())
    endpoints = {name: getattr(entry.backend, "endpoint_name", "") for name, entry in local.models.items()}
    entries = [name for name, endpoint in endpoints.items() if endpoint.startswith("sluice-iris")]
    assert {"iris", "iris-async", "iris-restricted"} <= set(entries)
    for catalog in (local, parse_catalog(json.dumps(catalog_document))):
        for name, entry in catalog.models.items():
            if name.startswith("iris"):
                assert entry.confidence.kind == "max_probability"
                assert entry.confidence.path == "predictions[*].probabilities"
                assert entry.confidence.steps == ("predictions", EACH, "probabilities")  # compiled at load


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"kind": "max_probability", "path": "predictions[0].probabilities"}, "confidence.path", "[*]"),
        ({"kind": "max_probability", "path": ""}, "confidence.path", "at least 1 character"),
        ({"kind": "entropy", "path": "predictions[*]"}, "confidence.kind", "'max_probability' or 'score'"),
        ({"kind": "score"}, "confidence.path", "Field required"),
        ({"kind": "score", "path": "p", "extra": 1}, "confidence.extra", "Extra inputs"),
    ],
)
def test_the_catalog_refuses_a_bad_confidence_spec_naming_the_field(catalog_document, spec, field, says):
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_with_confidence(catalog_document, "iris", spec))

    (problem,) = caught.value.problems
    assert problem.startswith(f"models.iris.{field}"), problem
    assert says in problem


def test_only_predict_models_may_declare_confidence(catalog_document):
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_with_confidence(catalog_document, "claude-chat", {"kind": "score", "path": "score"}))

    assert "confidence applies to 'predict' models only" in str(caught.value)


# --- the metrics of a request -------------------------------------------------------------------------


def _request_metrics(out: str) -> dict:
    emf = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"_aws"' in line]
    return next(line for line in emf if "Invocations" in line)


def _metric_names(line: dict) -> set[str]:
    return {metric["Name"] for metric in line["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def _invoke_iris(stubbed, lambda_context, answer: dict, variant: str = "v2") -> dict:
    stubbed("sagemaker-runtime").add_response("invoke_endpoint", sagemaker_answer(answer, variant=variant))
    return call(event("invoke-sagemaker", body='{"instances": [[5.1, 3.5, 1.4, 0.2]]}'), lambda_context)


def test_an_answer_publishes_predictions_and_low_confidence_with_the_invocation_dimensions(
    catalog, stubbed, lambda_context, capfd
):
    response = _invoke_iris(stubbed, lambda_context, IRIS_ANSWER)
    assert response["statusCode"] == 200
    assert json.loads(response["body"])["output"] == IRIS_ANSWER  # the answer itself is untouched

    line = _request_metrics(capfd.readouterr().out)
    assert {"Invocations", "Predictions", "LowConfidencePredictions"} <= _metric_names(line)
    assert (line["Predictions"], line["LowConfidencePredictions"]) == ([3], [1])  # EMF values are lists
    # Exactly the set Invocations is published with: what the deployment guard queries per variant.
    (dimensions,) = line["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert sorted(dimensions) == ["model", "provider", "service", "variant"]
    assert (line["service"], line["model"], line["provider"], line["variant"]) == ("sluice", "iris", "sagemaker", "v2")
    assert line["_aws"]["CloudWatchMetrics"][0]["Namespace"] == get_settings().metrics_namespace


def test_the_threshold_setting_is_respected(catalog, stubbed, lambda_context, capfd, monkeypatch):
    monkeypatch.setenv("SLUICE_CONFIDENCE_THRESHOLD", "0.99")
    get_settings.cache_clear()
    try:
        assert _invoke_iris(stubbed, lambda_context, IRIS_ANSWER)["statusCode"] == 200
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()

    line = _request_metrics(capfd.readouterr().out)
    assert (line["Predictions"], line["LowConfidencePredictions"]) == ([3], [3])


def test_an_all_confident_answer_still_publishes_a_zero_low_count(catalog, stubbed, lambda_context, capfd):
    answer = {"predictions": [IRIS_ANSWER["predictions"][0]], "model_version": "v1"}
    assert _invoke_iris(stubbed, lambda_context, answer)["statusCode"] == 200

    line = _request_metrics(capfd.readouterr().out)
    assert (line["Predictions"], line["LowConfidencePredictions"]) == ([1], [0])


def test_an_answer_without_readable_confidence_adds_no_confidence_metrics(catalog, stubbed, lambda_context, capfd):
    assert _invoke_iris(stubbed, lambda_context, {"predictions": [[0.9, 0.05, 0.05]]})["statusCode"] == 200

    names = _metric_names(_request_metrics(capfd.readouterr().out))
    assert "Invocations" in names
    assert not names & {"Predictions", "LowConfidencePredictions"}


def test_a_model_without_a_confidence_spec_adds_no_confidence_metrics(
    catalog_document, aws, stubbed, lambda_context, capfd
):
    document = copy.deepcopy(catalog_document)
    del document["models"]["iris"]["confidence"]
    store_catalog(document)
    assert _invoke_iris(stubbed, lambda_context, IRIS_ANSWER)["statusCode"] == 200

    assert not _metric_names(_request_metrics(capfd.readouterr().out)) & {"Predictions", "LowConfidencePredictions"}


def test_a_score_model_is_counted_from_its_score_field(catalog_document, aws, stubbed, lambda_context, capfd):
    spec = {"kind": "score", "path": "predictions[*].score"}
    store_catalog(json.loads(_with_confidence(catalog_document, "iris", spec)))
    answer = {"predictions": [{"score": 0.2}, {"score": 0.8}, {"score": 0.65}]}
    assert _invoke_iris(stubbed, lambda_context, answer, variant="blue")["statusCode"] == 200

    line = _request_metrics(capfd.readouterr().out)
    assert (line["Predictions"], line["LowConfidencePredictions"], line["variant"]) == ([3], [2], "blue")


# --- the template -------------------------------------------------------------------------------------


def test_the_threshold_is_a_stack_parameter_given_to_every_function_that_invokes_models(template, resources):
    assert template["Parameters"]["ConfidenceThreshold"]["Default"] == 0.7
    for function in ("ApiFunction", "AsyncWorkerFunction"):
        variables = resources[function]["Properties"]["Environment"]["Variables"]
        assert variables["SLUICE_CONFIDENCE_THRESHOLD"] == {"Ref": "ConfidenceThreshold"}, function


def test_a_standing_alarm_watches_the_low_confidence_share(template, resources):
    assert template["Parameters"]["LowConfidenceAlarmPercent"]["Default"] == 5
    alarm = resources["LowConfidenceAlarm"]["Properties"]

    assert alarm["Threshold"] == {"Ref": "LowConfidenceAlarmPercent"}
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    queries = {query["Id"]: query for query in alarm["Metrics"]}
    (watched,) = [query for query in alarm["Metrics"] if query.get("ReturnData")]
    # No traffic, no division: the share is 0 when nothing was counted.
    assert watched["Expression"] == "IF(predictions > 0, 100 * low / predictions, 0)"
    schema = 'FROM SCHEMA("Sluice", model, provider, service, variant)'
    assert queries["low"]["Expression"].startswith(f"SELECT SUM(LowConfidencePredictions) {schema}")
    assert queries["predictions"]["Expression"].startswith(f"SELECT SUM(Predictions) {schema}")
    assert queries["low"]["Period"] == queries["predictions"]["Period"]
