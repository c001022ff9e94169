"""The catalog tool: a platform team validates and publishes the catalog without touching code."""

from __future__ import annotations

import importlib.util
import json

import boto3
import pytest

from tests.conftest import ROOT


def _tool():
    spec = importlib.util.spec_from_file_location("sluice_tool_catalog", ROOT / "tools" / "catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted((ROOT / "catalog").glob("*.json")), ids=lambda p: p.name)
def test_shipped_catalogs_are_valid(path, capsys):
    assert _tool().main(["validate", str(path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_invalid_catalog_is_refused_with_each_field_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "models": {
                    "x": {
                        "descripton": "typo",
                        "task": "chat",
                        "backend": {"provider": "sagemaker", "endpoint_name": "bad_name"},
                        "allowed_callers": ["*"],
                    }
                }
            }
        )
    )
    assert _tool().main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "models.x.descripton" in err
    assert "models.x.description: Field required" in err
    assert "models.x.backend.endpoint_name: String should match pattern" in err


def test_push_stores_a_valid_catalog_and_refuses_an_invalid_one(aws, tmp_path, capsys):
    tool = _tool()
    source = ROOT / "catalog" / "example.json"
    assert tool.main(["--parameter", "/sluice/x/catalog", "push", str(source)]) == 0
    stored = json.loads(boto3.client("ssm").get_parameter(Name="/sluice/x/catalog")["Parameter"]["Value"])
    assert set(stored["models"]) == set(json.loads(source.read_text())["models"])

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert tool.main(["--parameter", "/sluice/x/catalog", "push", str(broken)]) == 1
    # The stored catalog is untouched by the refused push.
    again = json.loads(boto3.client("ssm").get_parameter(Name="/sluice/x/catalog")["Parameter"]["Value"])
    assert again == stored
    assert tool.main(["--parameter", "/sluice/x/catalog", "show"]) == 0
    assert '"claude-haiku"' in capsys.readouterr().out
