"""Loading the catalog from SSM Parameter Store, once per TTL, never once per request.

A malformed document is reported once per version (log + metric, offending fields named) and the
last good catalog keeps serving; with no good catalog yet, callers get a 503 that names the fields.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pydantic import ValidationError

from sluice.catalog.models import Catalog
from sluice.errors import CatalogInvalid
from sluice.telemetry import logger, record_catalog_error


class CatalogError(ValueError):
    """The document is not a valid catalog; `problems` lists `field.path: reason` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_catalog(raw: str | bytes) -> Catalog:
    try:
        return Catalog.model_validate_json(raw)
    except ValidationError as exc:
        raise CatalogError([_describe(err) for err in exc.errors()]) from None


# Pydantic puts a tagged union's tag in the error path (backend.sagemaker.endpoint_name); the document
# has no such key, so the tag is dropped to name the field as the platform team wrote it.
_BACKEND_TAGS = {"bedrock", "sagemaker"}


def _describe(err: dict) -> str:
    loc = [str(part) for part in err["loc"]]
    loc = [part for i, part in enumerate(loc) if not (i and loc[i - 1] == "backend" and part in _BACKEND_TAGS)]
    where = ".".join(loc) or "(document)"
    if err["type"] == "json_invalid":
        return f"(document): not valid JSON ({err['ctx'].get('error', err['msg'])})"
    return f"{where}: {err['msg']}"


def load_catalog_file(path: str) -> Catalog:
    with open(path, "rb") as handle:
        return parse_catalog(handle.read())


def _fetch_from_ssm(name: str, max_age: int) -> str:
    from aws_lambda_powertools.utilities import parameters

    # The store already holds the catalog for its TTL: a second cache here (Powertools', set a moment later)
    # would still be fresh when the store's TTL ends, so a new catalog version would wait for a second TTL.
    return parameters.get_parameter(name, max_age=max_age, force_fetch=True)


class CatalogStore:
    def __init__(
        self,
        parameter_name: str,
        ttl_seconds: int,
        fetch: Callable[[str, int], str] = _fetch_from_ssm,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parameter_name = parameter_name
        self.ttl_seconds = ttl_seconds
        self._fetch = fetch
        self._clock = clock
        self._good: Catalog | None = None
        self._raw: str | None = None
        self._problems: list[str] | None = None
        self._fresh_until = float("-inf")

    def get(self) -> Catalog:
        if self._clock() >= self._fresh_until:
            self._refresh()
        if self._good is None:
            raise CatalogInvalid(
                f"The model catalog ({self.parameter_name}) is invalid, so no model can be served. "
                "Platform team: fix the fields listed in details (see README, 'The model catalog').",
                details=self._problems,
            )
        return self._good

    def invalidate(self) -> None:
        self._fresh_until = float("-inf")

    def _refresh(self) -> None:
        # Whatever happens, the next attempt waits a full TTL: a broken catalog must not turn into an
        # SSM call per request.
        self._fresh_until = self._clock() + self.ttl_seconds
        try:
            raw = self._fetch(self.parameter_name, self.ttl_seconds)
        except Exception as exc:  # noqa: BLE001 - any fetch failure is reported the same way
            self._report([f"(parameter): could not be read: {exc}"])
            return
        if raw == self._raw:
            return
        self._raw = raw
        try:
            self._good = parse_catalog(raw)
            self._problems = None
            logger.info("catalog loaded", extra={"models": sorted(self._good.models)})
        except CatalogError as exc:
            self._report(exc.problems)

    def _report(self, problems: list[str]) -> None:
        self._problems = problems
        logger.error(
            "model catalog rejected",
            extra={"parameter": self.parameter_name, "problems": problems, "serving_last_good": self._good is not None},
        )
        record_catalog_error()


def dump_catalog(catalog: Catalog) -> str:
    return json.dumps(catalog.model_dump(mode="json", exclude_defaults=True), indent=2)
