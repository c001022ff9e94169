"""Regression: schemathesis over every operation of the local API finds no server error (make fuzz does 50 each)."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e


def _fuzz_tool():
    spec = importlib.util.spec_from_file_location("sluice_fuzz", ROOT / "tools" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fuzzing_every_operation_finds_no_server_error(tmp_path):
    fuzz = _fuzz_tool()
    consumer, operator = "sk-sluice-fuzz-regression", "sk-sluice-fuzz-regression-ops"
    process, url = fuzz.start_local(consumer, str(tmp_path), operator)
    try:
        results = [
            subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
            for command in (
                fuzz.schemathesis_command(url, consumer, 10, "not_a_server_error", ["--phases", "coverage,fuzzing"]),
                # Operations routes answer a consumer 403 only: an operator's key reaches their real code.
                fuzz.schemathesis_command(
                    url,
                    operator,
                    10,
                    "not_a_server_error",
                    ["--phases", "coverage,fuzzing", "--include-path-regex", "^/v1/approvals"],
                ),
            )
        ]
    finally:
        fuzz.stop_local(process)

    for result in results:
        assert result.returncode == 0, result.stdout[-4000:]
        assert "Operations:" in result.stdout
        assert " 0 selected" not in result.stdout
