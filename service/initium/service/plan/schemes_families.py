"""Schemes that reproduce one model family's own init where its law needs more than the tensor's fans."""

from __future__ import annotations

import math

from initium.schemas import schemes as wire
from initium.service.plan.distributions import Distribution, Normal
from initium.service.plan.schemes import Geometry, SchemeNotApplicableError, register_scheme


@register_scheme("t5")
def t5(p: wire.T5, g: Geometry) -> Distribution:
    r"""Raffel et al. (2020), Exploring the limits of transfer learning with a unified text-to-text
    transformer (T5), as Mesh TensorFlow and transformers' T5PreTrainedModel._init_weights draw it.

    N(0, factor^2 / fan_in) for every projection (k, v: d_model^{-1/2}; o: (n_heads d_kv)^{-1/2};
    wi: d_model^{-1/2}; wo: d_ff^{-1/2}); the query N(0, factor^2 / (fan_in \cdot d_kv)): T5 computes
    attention logits without the 1/\sqrt{d_kv} scale, so its query's init carries it. d_kv is the
    tensor's head_dim, which the spec must give (initium.client sets it for transformers' T5). The
    relative attention bias table draws d_model^{-1/2}: the client gives it fan_in d_model.
    """
    if not p.query:
        return Normal(0.0, p.factor / math.sqrt(g.fan_in))
    if g.head_dim is None:
        raise SchemeNotApplicableError(
            "t5 with query=true divides by the head width d_kv, and this tensor has no head_dim; "
            "give it in the manifest (spec_from_module does for transformers' T5)"
        )
    return Normal(0.0, p.factor / math.sqrt(g.fan_in * g.head_dim))
