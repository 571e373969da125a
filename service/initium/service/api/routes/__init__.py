"""HTTP routes, one module per resource; handlers only call into jobs, plan and the store."""
