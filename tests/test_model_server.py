"""The iris sample model server over real HTTP: the SageMaker container contract, input errors, artifacts.

Each server is `python models/iris/serve.py` in a subprocess on a free loopback port, as `make local` runs it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVE = ROOT / "models" / "iris" / "serve.py"
CLASSES = {"setosa", "versicolor", "virginica"}
SETOSA = [5.1, 3.5, 1.4, 0.2]
VERSICOLOR = [6.0, 2.7, 4.1, 1.0]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    model_dir: Path
    log: Path

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str | None, Any]:
        conn = self.connect()
        try:
            return send(conn, method, path, body, headers)
        finally:
            conn.close()

    def invoke(self, body: bytes, content_type: str | None = "application/json", **headers: str):
        if content_type is not None:
            headers["Content-Type"] = content_type
        return self.request("POST", "/invocations", body, headers)

    def stop(self) -> int:
        """SIGTERM, then the exit code; a server that ignores SIGTERM is killed and fails the test."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"server did not exit within {STOP_TIMEOUT} s of SIGTERM\n{self.log.read_text()}")


def send(conn: http.client.HTTPConnection, method: str, path: str, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, response.getheader("Content-Type"), json.loads(data) if data else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(model_dir: Path, log: Path, version: str | None = None, **extra_env: str) -> Server:
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(free_port()),
        "SLUICE_MODEL_BIND": "127.0.0.1",
        "SM_MODEL_DIR": str(model_dir),
        **extra_env,
    }
    env.pop("SLUICE_MODEL_VERSION", None)
    if version is not None:
        env["SLUICE_MODEL_VERSION"] = version
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, str(SERVE)], env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(proc, int(env["SAGEMAKER_BIND_TO_PORT"]), model_dir, log)


def start(model_dir: Path, log: Path, version: str | None = None, **extra_env: str) -> Server:
    """Launch a server and wait (bounded) until /ping answers 200."""
    server = launch(model_dir, log, version, **extra_env)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode} while starting\n{log.read_text()}")
        try:
            if server.request("GET", "/ping")[0] == 200:
                return server
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    server.proc.kill()
    server.proc.wait()
    pytest.fail(f"/ping not 200 within {START_TIMEOUT} s\n{log.read_text()}")


def exit_code(server: Server) -> int:
    try:
        return server.proc.wait(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
        pytest.fail(f"server kept running although it should have failed\n{server.log.read_text()}")


@pytest.fixture(scope="module")
def v1(tmp_path_factory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("iris-v1")
    server = start(base / "model", base / "server.log")
    yield server
    assert server.stop() == 0, server.log.read_text()


@pytest.fixture(scope="module")
def v2(tmp_path_factory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("iris-v2")
    server = start(base / "model", base / "server.log", version="v2")
    yield server
    assert server.stop() == 0, server.log.read_text()


def rows(*instances: list[float]) -> bytes:
    return json.dumps({"instances": list(instances)}).encode()


def assert_distribution(prediction: dict[str, Any]) -> None:
    probabilities = prediction["probabilities"]
    assert set(probabilities) == CLASSES
    assert all(0.0 <= p <= 1.0 for p in probabilities.values())
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction["label"] == max(probabilities, key=probabilities.get)


# --- the contract ---------------------------------------------------------------------------------------------


def test_ping_answers_200_once_the_model_is_loaded(v1):
    status, content_type, body = v1.request("GET", "/ping")
    assert status == 200
    assert content_type == "application/json"
    assert body["model_version"] == "v1"


def test_known_setosa_sample_is_classified_setosa_with_a_probability_distribution(v1):
    status, content_type, body = v1.invoke(rows(SETOSA))
    assert status == 200
    assert content_type == "application/json"
    assert body["model_version"] == "v1"
    [prediction] = body["predictions"]
    assert prediction["label"] == "setosa"
    assert_distribution(prediction)
    assert max(prediction["probabilities"], key=prediction["probabilities"].get) == "setosa"


def test_batch_of_three_rows_gets_three_predictions_in_order(v1):
    status, _, body = v1.invoke(rows(SETOSA, VERSICOLOR, VIRGINICA))
    assert status == 200
    assert [p["label"] for p in body["predictions"]] == ["setosa", "versicolor", "virginica"]
    for prediction in body["predictions"]:
        assert_distribution(prediction)


def test_csv_rows_are_predicted_like_json_rows(v1):
    csv = b"5.1,3.5,1.4,0.2\n6.0, 2.7, 4.1, 1.0\r\n6.7,3.0,5.2,2.3\n\n"
    status, content_type, body = v1.invoke(csv, "text/csv; charset=utf-8")
    assert status == 200
    assert content_type == "application/json"
    assert body == v1.invoke(rows(SETOSA, VERSICOLOR, VIRGINICA))[2]


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/csv;q=0.5, application/json"])
def test_accept_header_naming_json_or_anything_is_honoured(v1, accept):
    status, _, body = v1.invoke(rows(SETOSA), Accept=accept)
    assert status == 200
    assert body["predictions"][0]["label"] == "setosa"


def test_keep_alive_connection_serves_several_requests(v1):
    conn = v1.connect()
    try:
        assert send(conn, "GET", "/ping")[0] == 200
        assert send(conn, "POST", "/invocations", rows(SETOSA), {"Content-Type": "application/json"})[0] == 200
        bad = send(conn, "POST", "/invocations", b"{", {"Content-Type": "application/json"})
        assert bad[0] == 400
        assert send(conn, "POST", "/invocations", rows(VIRGINICA), {"Content-Type": "application/json"})[0] == 200
    finally:
        conn.close()


def test_concurrent_callers_all_get_answers(v1):
    def call(i: int) -> int:
        return v1.invoke(rows(SETOSA, VIRGINICA))[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(call, range(40))) == [200] * 40


# --- bad input: 4xx with a plain JSON message -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        pytest.param(b'{"instances": [[5.1, 3.5', "application/json", 400, "malformed JSON", id="malformed-json"),
        pytest.param(rows([5.1, 3.5, 1.4]), "application/json", 400, "expected 4 features", id="three-features"),
        pytest.param(rows(SETOSA, [*SETOSA, 1.0]), "application/json", 400, "instances[1]", id="five-features"),
        pytest.param(rows(["5.1", 3.5, 1.4, 0.2]), "application/json", 400, "finite numbers", id="string-feature"),
        pytest.param(rows([True, 3.5, 1.4, 0.2]), "application/json", 400, "finite numbers", id="bool-feature"),
        pytest.param(b'{"instances": [[NaN, 3.5, 1.4, 0.2]]}', "application/json", 400, "NaN", id="nan-feature"),
        pytest.param(rows(5.1), "application/json", 400, "list of 4 numbers", id="row-not-a-list"),
        pytest.param(b'{"rows": [[5.1, 3.5, 1.4, 0.2]]}', "application/json", 400, "instances", id="no-instances"),
        pytest.param(rows(), "application/json", 400, "non-empty", id="empty-instances"),
        pytest.param(b"", "application/json", 400, "empty request body", id="empty-body"),
        pytest.param(b"5.1,3.5,1.4\n", "text/csv", 400, "CSV line 1: expected 4 features", id="csv-three-features"),
        pytest.param(b"5.1,3.5,1.4,0.2\n5.1,abc,1.4,0.2\n", "text/csv", 400, "CSV line 2", id="csv-non-numeric"),
        pytest.param(
            b"sepal_length,sepal_width,petal_length,petal_width\n", "text/csv", 400, "no header", id="csv-hdr"
        ),
        pytest.param(b"\n\n", "text/csv", 400, "empty request body", id="csv-blank"),
        pytest.param(b"5.1 3.5 1.4 0.2", "text/plain", 415, "unsupported Content-Type 'text/plain'", id="text-plain"),
        pytest.param(rows(SETOSA), None, 415, "unsupported Content-Type", id="no-content-type"),
    ],
)
def test_bad_input_gets_4xx_with_a_json_error_message(v1, body, content_type, status, message):
    got_status, got_type, got = v1.invoke(body, content_type)
    assert got_status == status
    assert got_type == "application/json"
    assert set(got) == {"error"}
    assert message in got["error"]


def test_accept_other_than_json_is_refused_with_406(v1):
    status, _, body = v1.invoke(rows(SETOSA), Accept="text/csv")
    assert status == 406
    assert "application/json" in body["error"]


def test_oversized_body_is_refused_with_413_without_reading_it(v1):
    status, _, body = v1.invoke(b"{}", **{"Content-Length": str(7 * 1024 * 1024)})
    assert status == 413
    assert "exceeds" in body["error"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/invocations"), ("POST", "/ping"), ("GET", "/nope")])
def test_unknown_route_is_404_with_a_json_error(v1, method, path):
    status, _, body = v1.request(method, path, b"" if method == "POST" else None)
    assert status == 404
    assert path in body["error"]


# --- artifacts and versions -----------------------------------------------------------------------------------


def test_artifact_is_created_on_first_start_and_reused_on_the_next(v1, tmp_path):
    artifact = v1.model_dir / "model.joblib"
    assert artifact.is_file()
    assert "trained model v1" in v1.log.read_text()
    before = artifact.stat().st_mtime_ns
    first_answer = v1.invoke(rows(SETOSA, VERSICOLOR))[2]

    second = start(v1.model_dir, tmp_path / "second.log")
    try:
        assert second.invoke(rows(SETOSA, VERSICOLOR))[2] == first_answer
    finally:
        assert second.stop() == 0
    log = second.log.read_text()
    assert "loaded model v1" in log
    assert "trained" not in log
    assert artifact.stat().st_mtime_ns == before


def test_v1_and_v2_are_different_models_reporting_their_version(v1, v2):
    first, second = (server.invoke(rows(SETOSA, VERSICOLOR, VIRGINICA))[2] for server in (v1, v2))
    assert first["model_version"] == "v1"
    assert second["model_version"] == "v2"
    assert v2.request("GET", "/ping")[2]["model_version"] == "v2"
    assert [p["label"] for p in second["predictions"]] == ["setosa", "versicolor", "virginica"]
    for prediction in second["predictions"]:
        assert_distribution(prediction)
    assert first["predictions"] != second["predictions"]
    assert "RandomForestClassifier" in v2.log.read_text()


def test_requesting_another_version_than_the_stored_artifact_fails_the_start(v1, tmp_path):
    server = launch(v1.model_dir, tmp_path / "mismatch.log", version="v2")
    assert exit_code(server) == 1
    assert "holds model version v1, but version v2 was requested" in server.log.read_text()


def test_unreadable_artifact_fails_the_start_instead_of_serving(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.joblib").write_bytes(b"not a joblib file")
    server = launch(tmp_path / "model", tmp_path / "corrupt.log")
    assert exit_code(server) == 1
    assert "could not load the model" in server.log.read_text()


def test_unknown_version_is_refused_at_startup(tmp_path):
    server = launch(tmp_path / "model", tmp_path / "unknown.log", version="v9")
    assert exit_code(server) == 2
    assert "SLUICE_MODEL_VERSION='v9'" in server.log.read_text()
    assert not (tmp_path / "model").exists()


# --- the degraded mode: a version that must be rolled back ------------------------------------------------


@pytest.fixture(scope="module")
def degraded(tmp_path_factory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("iris-degraded")
    server = start(base / "model", base / "server.log", version="degraded")
    yield server
    assert server.stop() == 0, server.log.read_text()


def test_degraded_mode_fails_every_third_request_and_answers_the_rest_unsure(degraded, v2):
    answers = [degraded.invoke(rows(SETOSA, VIRGINICA)) for _ in range(9)]

    assert [status for status, _, _ in answers] == [200, 200, 500] * 3
    assert answers[2][2] == {"error": "degraded model: internal error while predicting (simulated)"}
    sure = v2.invoke(rows(SETOSA, VIRGINICA))[2]["predictions"]
    for status, _, body in answers:
        if status != 200:
            continue
        assert body["model_version"] == "degraded"
        # The label is the real model's; no probability reaches the 0.7 confidence threshold.
        assert [p["label"] for p in body["predictions"]] == [p["label"] for p in sure]
        for prediction in body["predictions"]:
            assert_distribution(prediction)
            assert max(prediction["probabilities"].values()) < 0.7
    # Refused input is the caller's error, not one of the degraded failures, and does not count.
    assert degraded.invoke(rows([1.0]))[0] == 400


def test_degraded_flag_degrades_any_version(tmp_path):
    server = start(tmp_path / "model", tmp_path / "server.log", version="v1", SLUICE_MODEL_DEGRADED="1")
    try:
        statuses = [server.invoke(rows(SETOSA))[0] for _ in range(3)]
        _, _, body = server.invoke(rows(SETOSA))
    finally:
        assert server.stop() == 0
    assert statuses == [200, 200, 500]
    assert max(body["predictions"][0]["probabilities"].values()) < 0.7
    assert "(degraded)" in server.log.read_text()
