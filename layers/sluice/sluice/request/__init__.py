"""What every API operation shares, inference and jobs alike: the request's context, body and query
validation, content types, and the catalog access policy (who may use which model)."""
