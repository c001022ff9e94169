"""Durable jobs: async inference and batch transform, their records, S3 layout and workflows."""
