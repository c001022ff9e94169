"""Local-mode settings, from environment variables (README: "Run locally")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class LocalConfig:
    # The API, as `sam local start-api` would serve it.
    api_port: int = field(default_factory=lambda: _port("SLUICE_LOCAL_PORT", 3000))
    # The embedded AWS endpoint (moto server): point the aws CLI or boto3 at it with --endpoint-url.
    aws_port: int = field(default_factory=lambda: _port("SLUICE_LOCAL_AWS_PORT", 5000))
    # The local SageMaker runtime and Bedrock stand-ins (0: any free port).
    sagemaker_port: int = field(default_factory=lambda: _port("SLUICE_LOCAL_SAGEMAKER_PORT", 0))
    bedrock_port: int = field(default_factory=lambda: _port("SLUICE_LOCAL_BEDROCK_PORT", 0))
    # The local API key; generated (and printed once) when unset.
    api_key: str | None = field(default_factory=lambda: os.environ.get("SLUICE_LOCAL_API_KEY") or None)
    # The local operator key (tenant `platform`, which also owns dropped files' jobs); generated when unset.
    operator_key: str | None = field(default_factory=lambda: os.environ.get("SLUICE_LOCAL_OPERATOR_KEY") or None)
    stack_name: str = field(default_factory=lambda: os.environ.get("SLUICE_LOCAL_STACK", "sluice-local"))
    region: str = field(default_factory=lambda: os.environ.get("SLUICE_LOCAL_REGION", "us-east-1"))
    # Model artifacts and other files local mode writes (git-ignored).
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("SLUICE_LOCAL_STATE_DIR", ROOT / ".local")))
    template: Path = field(
        default_factory=lambda: Path(os.environ.get("SLUICE_LOCAL_TEMPLATE", ROOT / "template.yaml"))
    )
    host: str = LOOPBACK

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"
