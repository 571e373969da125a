"""The worker: materialize, summarize and write the tensors of a planned job (imports torch)."""
