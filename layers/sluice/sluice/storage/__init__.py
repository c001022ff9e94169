"""Where Sluice keeps data in S3: one key scheme, used by every component."""
