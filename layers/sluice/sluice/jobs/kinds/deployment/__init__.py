"""Deployments: a new model version promoted onto a SageMaker endpoint in steps, guarded, rolled back by itself."""
