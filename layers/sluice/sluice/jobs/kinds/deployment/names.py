"""The SageMaker names a deployment creates: one EndpointConfig per change it makes, each carrying the job.

`<endpoint>-<job short id>-canary` (the current variants plus the new one) and `-promoted` (the new
version alone). The endpoint part is cut so the name stays within SageMaker's 63 characters.
"""

from __future__ import annotations

MAX_NAME = 63


def short_id(job_id: str) -> str:
    """The job id's first 8 characters after its "job-" prefix: unique enough beside the endpoint's name."""
    return job_id.removeprefix("job-")[:8]


def config_name(endpoint_name: str, job_id: str, purpose: str) -> str:
    suffix = f"-{short_id(job_id)}-{purpose}"
    return f"{endpoint_name[: MAX_NAME - len(suffix)].rstrip('-')}{suffix}"


def canary_config_name(endpoint_name: str, job_id: str) -> str:
    return config_name(endpoint_name, job_id, "canary")


def promoted_config_name(endpoint_name: str, job_id: str) -> str:
    return config_name(endpoint_name, job_id, "promoted")
