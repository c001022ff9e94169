"""Who is calling: API keys (hashed at rest), the Lambda authorizer's decision, and the caller identity."""
