"""Synchronous inference: resolve the model, enforce its limits, call the backend, account for it."""
