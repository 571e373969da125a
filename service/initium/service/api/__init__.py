"""The HTTP layer: app, dependencies, error mapping, security, metrics and routes; never imports torch."""
