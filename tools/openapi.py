"""Print the API's OpenAPI document, generated offline from the same pydantic models the API uses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "layers" / "sluice"), str(ROOT / "functions" / "api")]
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

import app  # noqa: E402

if __name__ == "__main__":
    print(app.app.get_openapi_json_schema(title="Sluice", version=app.__version__))
