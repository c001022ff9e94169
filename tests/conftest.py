"""Shared test setup: a fake AWS environment, the catalog in (moto) SSM, stubbed backends, handler loading."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from functools import cache
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Set before any handler or library import reads them; never real credentials.
os.environ.update(
    AWS_DEFAULT_REGION="us-east-1",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    POWERTOOLS_SERVICE_NAME="sluice",
    POWERTOOLS_METRICS_NAMESPACE="Sluice",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_DEV="false",
    SLUICE_CATALOG_PARAMETER="/sluice/test/catalog",
    SLUICE_API_KEYS_TABLE="sluice-test-api-keys",
)
for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(name, None)

from sluice import clients as _clients  # noqa: E402 - after the environment is set

# The real cached factory, kept before any test patches clients.get.
_cached_client_factory = _clients.get


@cache
def shared_client(service: str) -> Any:
    """One boto3 client per service for the whole run, from one session.

    moto intercepts every botocore client while a mock is active, whenever the client was built, so
    reusing clients across tests is safe; building a session and a client costs ~30 ms each time.
    """
    import boto3

    return boto3.session.Session().client(service)


def load_handler(function: str) -> ModuleType:
    """Import functions/<function>/app.py under its own module name (every function has an app.py)."""
    module_name = f"sluice_function_{function}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / function / "app.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_event(relative: str) -> dict:
    return json.loads((EVENTS / relative).read_text())


@pytest.fixture(scope="session", autouse=True)
def _shared_botocore_loader():
    """One botocore data loader for the whole run, so service models are parsed once.

    moto gives every test a fresh default boto3 session and Powertools builds a session per provider;
    each new session would otherwise re-read the JSON service models (~80 ms per client). The loader
    only caches files shipped with botocore/boto3, so sharing it changes no behaviour.
    """
    import botocore.session
    from botocore.loaders import create_loader

    loaders: dict[str | None, object] = {}

    def shared_loader(search_path_string: str | None = None):
        if search_path_string not in loaders:
            loaders[search_path_string] = create_loader(search_path_string)
        return loaders[search_path_string]

    patcher = pytest.MonkeyPatch()
    patcher.setattr(botocore.session, "create_loader", shared_loader)
    yield
    patcher.undo()


@pytest.fixture
def lambda_context() -> SimpleNamespace:
    return SimpleNamespace(
        function_name="sluice-test",
        memory_limit_in_mb=512,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:sluice-test",
        aws_request_id="test-invocation",
        get_remaining_time_in_millis=lambda: 30_000,
    )


@pytest.fixture
def catalog_document() -> dict:
    return json.loads((FIXTURES / "catalog.json").read_text())


@pytest.fixture
def jobs(aws, catalog_document, monkeypatch):
    """The jobs stack of tests/jobs_support.py (tables, bucket, topics, settings) in moto, for API-level job tests."""
    from sluice.settings import get_settings
    from tests.jobs_support import create_jobs_stack

    stack = create_jobs_stack(monkeypatch, catalog_document)
    yield stack
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def aws():
    """moto for every AWS call the test makes, with Sluice's process-wide caches emptied around it."""
    from aws_lambda_powertools.utilities import parameters
    from aws_lambda_powertools.utilities.parameters.base import DEFAULT_PROVIDERS
    from moto import mock_aws

    from sluice.request import access

    def reset() -> None:
        parameters.clear_caches()
        # The real Powertools SSM provider, on a shared client rather than a new session per test.
        DEFAULT_PROVIDERS["ssm"] = parameters.SSMProvider(boto3_client=shared_client("ssm"))
        access.catalog_store.cache_clear()
        _cached_client_factory.cache_clear()

    reset()
    with mock_aws():
        yield
    reset()


@pytest.fixture
def catalog(aws, catalog_document) -> dict:
    """The fixture catalog stored where the API reads it (moto SSM)."""
    shared_client("ssm").put_parameter(
        Name=os.environ["SLUICE_CATALOG_PARAMETER"], Value=json.dumps(catalog_document), Type="String", Tier="Advanced"
    )
    return catalog_document


@pytest.fixture
def stubbed(monkeypatch):
    """Backend clients with botocore Stubbers (moto has no Converse): stubbed('bedrock-runtime').add_response(...)."""
    from botocore.stub import Stubber

    from sluice import clients

    stubs: dict[str, Stubber] = {}
    real_get = clients.get

    def get(service: str, timeout_seconds: float | None = None):
        if service in stubs:
            return stubs[service].client
        return real_get(service, timeout_seconds)

    def stub_for(service: str) -> Stubber:
        if service not in stubs:
            stubs[service] = Stubber(shared_client(service))
            stubs[service].activate()
        return stubs[service]

    monkeypatch.setattr(clients, "get", get)
    yield stub_for
    try:
        for stub in stubs.values():
            stub.assert_no_pending_responses()
    finally:
        for stub in stubs.values():
            stub.deactivate()


# --- local mode: an embedded AWS and the two iris model versions, once per test module -------------


@pytest.fixture(scope="module")
def moto():
    import urllib.request

    from sluice_local.emulator import start_moto

    server = start_moto("127.0.0.1", 0)
    yield server
    # moto's state is process-wide: leave nothing behind for the next module's embedded AWS.
    urllib.request.urlopen(urllib.request.Request(f"{server.url}/moto-api/reset", method="POST")).close()
    server.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The iris model processes, v1 and v2, started in parallel: {version: RunningModel}."""
    from concurrent.futures import ThreadPoolExecutor

    from sluice_local.models import start_model

    root = tmp_path_factory.mktemp("models")
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda version: start_model(version, root / version), ["v1", "v2"]))
    yield {model.version: model for model in started}
    for model in started:
        model.stop()


@pytest.fixture
def final_moves(monkeypatch):
    """Every transition into a final state that the jobs table accepted, by job id (the real store's)."""
    from collections import Counter

    from sluice.jobs.store import JobStore

    moves: Counter[str] = Counter()
    transition = JobStore.transition

    def counted(self, job_id, to, **kwargs):
        job = transition(self, job_id, to, **kwargs)
        if job is not None and to.terminal:
            moves[job_id] += 1
        return job

    monkeypatch.setattr(JobStore, "transition", counted)
    return moves


@pytest.fixture(scope="module")
def template() -> dict:
    """template.yaml as written (intrinsics as {"Ref": ...} dicts), for tests of the stack's contents."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse((ROOT / "template.yaml").read_text())


@pytest.fixture(scope="module")
def resources(template) -> dict:
    return template["Resources"]
