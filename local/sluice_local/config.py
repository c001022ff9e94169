"""Local-mode settings, from environment variables (README: "Run locally")."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


PARAMETER_OVERRIDES = "SLUICE_LOCAL_PARAMETER_OVERRIDES"
# CloudFormation parameter names are alphanumeric.
_PARAMETER_NAME = re.compile(r"^[A-Za-z0-9]+$")
# sam's long form: ParameterKey=Name,ParameterValue=value
_LONG_FORM = re.compile(r"^ParameterKey=([^,]*),ParameterValue=(.*)$", re.DOTALL)


class ParameterOverridesError(ValueError):
    """SLUICE_LOCAL_PARAMETER_OVERRIDES cannot be applied (the message says what and where)."""


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


SPOT_INTERRUPT_AT_EPOCH = "SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH"


def spot_interrupt_at_epoch() -> int | None:
    """SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH: reclaim spot training after this epoch's checkpoint (unset: never)."""
    text = os.environ.get(SPOT_INTERRUPT_AT_EPOCH, "").strip()
    if not text:
        return None
    try:
        epoch = int(text)
    except ValueError:
        epoch = 0
    if epoch < 1:
        # A typo must not silently turn the fault injection off.
        raise ValueError(f"{SPOT_INTERRUPT_AT_EPOCH}={text!r} is not an epoch number (1 or more)")
    return epoch


def parse_parameter_overrides(text: str) -> dict[str, str]:
    """`Key=Value Key2="a b" Key3=x=y`, as `sam deploy --parameter-overrides` takes them.

    Shell quoting ("a b", 'a b', backslashes), the value running to the end of its word (so it may hold
    `=`), and sam's long form `ParameterKey=Key,ParameterValue=Value` too. A key given twice keeps the last.
    """
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise ParameterOverridesError(f"{PARAMETER_OVERRIDES}: cannot split {text!r}: {error}") from None
    overrides: dict[str, str] = {}
    for word in words:
        long_form = _LONG_FORM.match(word)
        if long_form:
            key, value = long_form.groups()
        elif "=" in word:
            key, value = word.split("=", 1)
        else:
            raise ParameterOverridesError(f"{PARAMETER_OVERRIDES}: {word!r} is not Key=Value")
        if not _PARAMETER_NAME.match(key):
            raise ParameterOverridesError(
                f"{PARAMETER_OVERRIDES}: {key!r} is not a parameter name (letters and digits)"
            )
        overrides[key] = value
    return overrides


def check_parameter_overrides(overrides: dict[str, str], declared: dict[str, Any], template: Path) -> None:
    """Fail on a key the template does not declare (a typo would otherwise change nothing, silently), and on
    a value CloudFormation would refuse: not one of its AllowedValues, or not a number for a Number."""
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ParameterOverridesError(
            f"{PARAMETER_OVERRIDES}: {template.name} declares no parameter {', '.join(unknown)}; "
            f"its parameters: {', '.join(sorted(declared)) or 'none'}"
        )
    for key, value in overrides.items():
        declaration = declared[key] or {}
        allowed = [str(item) for item in declaration.get("AllowedValues", [])]
        if allowed and value not in allowed:
            raise ParameterOverridesError(
                f"{PARAMETER_OVERRIDES}: {key}={value!r} is not one of its allowed values: {', '.join(allowed)}"
            )
        if declaration.get("Type") == "Number":
            try:
                float(value)
            except ValueError:
                raise ParameterOverridesError(f"{PARAMETER_OVERRIDES}: {key}={value!r} is not a number") from None


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
    # Template parameter values for the local stack (SLUICE_LOCAL_PARAMETER_OVERRIDES), over local mode's own.
    parameter_overrides: dict[str, str] = field(
        default_factory=lambda: parse_parameter_overrides(os.environ.get(PARAMETER_OVERRIDES, ""))
    )
    # Spot training jobs are reclaimed after this epoch's checkpoint, once per checkpoint location (training.py).
    spot_interrupt_at_epoch: int | None = field(default_factory=spot_interrupt_at_epoch)
    host: str = LOOPBACK

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"
