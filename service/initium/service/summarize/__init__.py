"""Summarize: what each generated tensor holds, checked against its law, and the report (imports torch)."""
