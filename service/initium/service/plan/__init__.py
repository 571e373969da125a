"""Plan: spec + policy -> every named tensor with its shape, fans, context, rule and distribution.

Pure Python: the API process plans (so bad requests are refused before anything is queued) and
the worker re-plans from the stored request to know what to generate.
"""

from initium.service.plan.planner import Limits, make_plan, planned_distribution, tensor_nbytes

__all__ = ["Limits", "make_plan", "planned_distribution", "tensor_nbytes"]
