"""Async inference jobs: one input object scored by a model, on a SageMaker async endpoint or through
statemachines/async_inference.asl.json for any other backend."""
