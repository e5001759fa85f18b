"""Cloud Run Job entrypoints (the same image as the service)."""
