"""initium's wire contract: the request, plan, report, job and error models (pydantic v2 only)."""

from initium.schemas.catalog import PresetList, SchemeInfo, SchemeList
from initium.schemas.errors import ErrorBody, ErrorInfo
from initium.schemas.job import TERMINAL_STATES, JobState, JobStatus, Links, Progress
from initium.schemas.plan import Algorithm, Distribution, Plan, PlannedTensor, PlanTotals
from initium.schemas.policy import Match, Policy, Rule
from initium.schemas.presets import Preset, get_preset, list_presets
from initium.schemas.report import Report, TensorStats
from initium.schemas.request import DType, InitRequest
from initium.schemas.schemes import SCHEME_MODELS, SchemeParams
from initium.schemas.spec import Module, Spec

__all__ = [
    "SCHEME_MODELS",
    "TERMINAL_STATES",
    "Algorithm",
    "DType",
    "Distribution",
    "ErrorBody",
    "ErrorInfo",
    "InitRequest",
    "JobState",
    "JobStatus",
    "Links",
    "Match",
    "Module",
    "Plan",
    "PlanTotals",
    "PlannedTensor",
    "Policy",
    "Preset",
    "PresetList",
    "Progress",
    "Report",
    "Rule",
    "SchemeInfo",
    "SchemeList",
    "SchemeParams",
    "Spec",
    "TensorStats",
    "get_preset",
    "list_presets",
]
