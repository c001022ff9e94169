"""Trained models, served: a SageMaker model whose container names a model.tar.gz (ModelDataUrl) gets a model
process of its own on that artifact, as SageMaker extracts ModelDataUrl into /opt/ml/model of the container.

    trained = TrainedModels(aws_url, region, state_dir / "trained")
    trained.url("s3://bucket/training-output/.../model.tar.gz")   # http://127.0.0.1:<port>, or None
    trained.stop()

Started lazily, at the first request that needs it (a transform job, an endpoint invocation), and then
kept: one process per ModelDataUrl, restarted if it died, all stopped by `stop()`. The artifact is read
once: SageMaker too copies the model data when the model is deployed, so a later overwrite of the object
changes nothing until local mode restarts.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from sluice_local._http import LOOPBACK
from sluice_local.embedded_clients import embedded_s3
from sluice_local.models import ModelStartError, RunningModel, start_model

log = logging.getLogger("sluice_local.artifacts")

ARTIFACT_FILE = "model.joblib"


@dataclass
class TrainedModels:
    aws_url: str
    region: str
    root: Path
    host: str = LOOPBACK
    _running: dict[str, RunningModel] = field(default_factory=dict, repr=False)
    _locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _s3: Any = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def url(self, model_data_url: str) -> str | None:
        """The URL of the process serving that artifact (started now if need be); None if it cannot be served."""
        with self._lock:
            if self._stopped:
                return None
            lock = self._locks.setdefault(model_data_url, threading.Lock())
        # One start per artifact even when requests race; other artifacts do not wait for it.
        with lock:
            running = self._running.get(model_data_url)
            if running is not None and running.running():
                return running.url
            try:
                running = self._start(model_data_url)
            except (_NotServable, ModelStartError) as exc:
                log.warning("the model data %s cannot be served locally: %s", model_data_url, exc)
                return None
            with self._lock:
                if self._stopped:
                    running.stop()
                    return None
                self._running[model_data_url] = running
            log.info("serving the model data %s at %s", model_data_url, running.url)
            return running.url

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            running = list(self._running.values())
            self._running.clear()
        for model in running:
            model.stop()

    def _start(self, model_data_url: str) -> RunningModel:
        digest = hashlib.sha256(model_data_url.encode()).hexdigest()[:16]
        model_dir = self.root / digest
        archive = self.root / f"{digest}.tar.gz"
        self.root.mkdir(parents=True, exist_ok=True)
        bucket, key = _parse_s3(model_data_url)
        try:
            self._client().download_file(bucket, key, str(archive))
        except (ClientError, BotoCoreError) as exc:
            raise _NotServable(f"cannot download it: {exc}") from None
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True)
        try:
            with tarfile.open(archive) as tar:
                # The "data" filter refuses links and paths outside model_dir: the archive is someone's upload.
                tar.extractall(model_dir, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise _NotServable(f"it is not a model.tar.gz: {exc}") from None
        finally:
            archive.unlink(missing_ok=True)
        if not (model_dir / ARTIFACT_FILE).is_file():
            # serve.py would otherwise train a sample model there and serve that instead.
            raise _NotServable(f"the archive holds no {ARTIFACT_FILE} at its top level")
        return start_model(
            f"trained-{digest}",
            model_dir,
            host=self.host,
            pin_version=False,
            log_path=self.root / f"{digest}.log",
        )

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = embedded_s3(self.aws_url, self.region)
        return self._s3


class _NotServable(Exception):
    pass


def _parse_s3(uri: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise _NotServable("it is not an s3://bucket/key URL")
    return parts.netloc, parts.path.lstrip("/")
