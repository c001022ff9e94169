"""Backends: thin calls to Bedrock and SageMaker runtime, with their errors translated to Sluice's."""
