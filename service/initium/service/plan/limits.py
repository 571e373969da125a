"""What one request may ask for on this server: read by the settings, enforced by the planner.

Its own module so the settings (which workers read too) do not import the planner.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask for on this server (the INITIUM_* settings of the same names).

    max_tensors, max_name_bytes (the tensor names' total length) and max_modules are counted from
    the spec before planning (plan.bounds); max_plan_seconds bounds planning's wall time. The
    largest plan the defaults allow (100,000 tensors) took 11-25 s and 0.55 GB of the API's peak
    memory on the project's shared 2-core machine (issue 16; 200,000 took 1.1 GB).
    """

    max_parameters: int = 20_000_000_000
    max_tensors: int = 100_000
    max_depth: int = 64
    max_modules: int = 200_000
    max_name_bytes: int = 32 * 1024 * 1024
    max_plan_seconds: float = 30.0
