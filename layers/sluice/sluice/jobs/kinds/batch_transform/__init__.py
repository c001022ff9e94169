"""Batch transform jobs: every object under an S3 prefix (or one dropped file) scored by a SageMaker
transform job, run by statemachines/batch_transform.asl.json."""
