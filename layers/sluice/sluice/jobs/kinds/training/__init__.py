"""Training runs: a SageMaker training job per attempt, resumed from one checkpoint location."""
