"""The model registry: SageMaker model package groups, their versions and the approval gate."""
