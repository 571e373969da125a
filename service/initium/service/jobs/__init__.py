"""Jobs: submit (validate and plan), the job records, the queue, presets and the supervisor; torch-free."""
