"""What Sluice keeps on a model package version beyond SageMaker's own fields (CustomerMetadataProperties).

The training workflow writes them when it registers a version (sluice.registry.registration); the
registry routes read them (sluice.registry.packages) and add who decided (sluice.registry.versions).
Keys up to 128 characters, values up to 256.
"""

from __future__ import annotations

JOB_ID = "sluice:job-id"
TRAINING_JOB = "sluice:training-job"
TRAINER = "sluice:trainer"
MODEL_ARTIFACT = "sluice:model-artifact"
DECIDED_BY = "sluice:decided-by"
# One per final metric of the run: metric:<name> = its value.
METRIC_PREFIX = "metric:"
