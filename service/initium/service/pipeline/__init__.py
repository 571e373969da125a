"""The pipeline: one job run through materialize, summarize and write, fan-out, the worker loop and the Celery tasks."""
