"""What one request may ask for on this server: read by the settings, enforced by the planner.

Its own module so the settings (which workers read too) do not import the planner.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for on this server."""

    max_parameters: int = 20_000_000_000
    max_tensors: int = 1_000_000
    max_depth: int = 64
    max_modules: int = 200_000
