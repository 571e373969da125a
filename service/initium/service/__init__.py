"""initium service: validate and plan in the API process, materialize and write in the worker."""

__version__ = "0.1.0"
