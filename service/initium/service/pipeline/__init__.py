"""The pipeline: one job run through materialize, summarize and write, fan-out, the worker loop, the
Celery tasks and local mode's entry point."""
