"""Print the API's OpenAPI document, generated offline from the same pydantic models the API uses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sluice"), str(ROOT / "functions" / "api")]
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

import app  # noqa: E402

if __name__ == "__main__":
    print(json.dumps(app.openapi(), indent=2))
