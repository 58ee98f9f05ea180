"""Background jobs: a worker that runs the durable job queue's jobs (ingestion)."""
