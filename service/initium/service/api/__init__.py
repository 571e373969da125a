"""The HTTP layer: app, dependencies, error mapping, security, metrics, routes, downloads and the HTML
report; never imports torch."""
