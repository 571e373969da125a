"""Plan: spec + policy -> every named tensor with its shape, fans, context, rule and distribution.

Pure Python: the API process plans (so bad requests are refused before anything is queued) and
stores the plan with the job; workers read the stored plan and never plan again.
"""
