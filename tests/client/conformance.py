"""The conformance matrix (issue 13, item 7) as data, and its checks: each row is a model built on
meta from a small config, initialized through the real client, and compared with the same model
built on CPU by its own framework (test_conformance.py runs it; benchmarks/conformance.py writes
docs/conformance.md from it).

Every check returns human-readable problems, empty when the row conforms.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from scipy import stats
from torch import nn

if TYPE_CHECKING:
    from initium.client import Client

KS_MIN_ELEMENTS = 1000  # the threshold for a two-sample KS test
KS_MIN_PVALUE = 1e-4
MEAN_MAX_Z = 5.0  # |mean(ours) - mean(theirs)| in standard errors
REFERENCE_COPIES = 3  # the framework's own init, pooled over this many CPU builds
MAX_SEEDS = 16  # ours, pooled over at most this many seeds so that small tensors reach KS_MIN_ELEMENTS


@dataclass(frozen=True)
class Row:
    """One model of the matrix and the policy that should reproduce its framework's own init."""

    id: str
    family: str
    build: Callable[[], nn.Module]
    example_input: Callable[[], tuple[Any, ...] | dict[str, Any]]
    policy: str
    fan_convention: Literal["initium", "torch"] = "initium"
    known_failure: str | None = None
    requires: tuple[str, ...] = ()  # modules the row imports (pytest.importorskip)

    def policy_json(self) -> dict[str, Any]:
        return {"preset": self.policy, "fan_convention": self.fan_convention}


# -- the rows -------------------------------------------------------------------------------------

VOCAB = 120
SMALL_LM = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": VOCAB, "max_position_embeddings": 64,
}  # fmt: skip


def _tokens() -> dict[str, Any]:
    return {"input_ids": torch.arange(3, 3 + 16).reshape(2, 8) % VOCAB}


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _hf(model: str, config: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        module: nn.Module = getattr(transformers, model)(getattr(transformers, config)(**kwargs))
        return module

    return build


def _hf_row(id: str, family: str, build: Callable[[], nn.Module], policy: str, **kw: Any) -> Row:
    return Row(id, family, build, kw.pop("example_input", _tokens), policy, requires=("transformers",), **kw)


def _t5_input() -> dict[str, Any]:
    return {**_tokens(), "decoder_input_ids": torch.arange(5, 11).reshape(1, 6).repeat(2, 1)}


_GPT2 = {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab_size": VOCAB, "n_positions": 64}
_BERT = {k: v for k, v in SMALL_LM.items() if k != "num_key_value_heads"}
_VIT = {k: v for k, v in _BERT.items() if k not in ("vocab_size", "max_position_embeddings")}
_T5 = {"vocab_size": VOCAB, "d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4}
_OPT = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 128, "vocab_size": VOCAB,
    "max_position_embeddings": 64, "word_embed_proj_dim": 64, "pad_token_id": 1,
}  # fmt: skip

HF_ROWS = [
    _hf_row("gpt2", "GPT-2", _hf("GPT2LMHeadModel", "GPT2Config", **_GPT2, bos_token_id=0, eos_token_id=0), "gpt2"),
    _hf_row("llama", "Llama", _hf("LlamaForCausalLM", "LlamaConfig", **SMALL_LM), "llama"),
    _hf_row("mistral", "Mistral", _hf("MistralForCausalLM", "MistralConfig", **SMALL_LM), "llama"),
    _hf_row("qwen2", "Qwen2", _hf("Qwen2ForCausalLM", "Qwen2Config", **SMALL_LM), "llama"),
    _hf_row("gemma", "Gemma", _hf("GemmaForCausalLM", "GemmaConfig", **SMALL_LM, head_dim=16), "llama"),
    _hf_row("bert", "BERT", _hf("BertForMaskedLM", "BertConfig", **_BERT), "bert"),
    _hf_row("vit", "ViT", _hf("ViTModel", "ViTConfig", **_VIT, image_size=32, patch_size=8), "vit",
            example_input=lambda: {"pixel_values": _randn(2, 3, 32, 32)}),
    _hf_row("t5", "T5", _hf("T5ForConditionalGeneration", "T5Config", **_T5, decoder_start_token_id=0), "t5",
            example_input=_t5_input),
    # OPT has no _init_weights of its own: PreTrainedModel's N(0, init_std^2) weights and embeddings
    # (padding row 0), biases 0, LayerNorm 1 and 0, which is the bert preset.
    _hf_row("opt", "OPT", _hf("OPTForCausalLM", "OPTConfig", **_OPT), "bert"),
]  # fmt: skip


def _torch_row(id: str, family: str, build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> Row:
    # torch_default draws from torch's own fans under either convention; "torch" is the convention
    # that states them (a grouped conv's fan_out over all groups, a transposed conv's "fan_in" from
    # its [in, out / groups, *k] layout), so the plan shows the numbers torch itself uses.
    return Row(id, family, build, lambda: (_randn(*input_shape),), "torch-default", "torch")


def _encoder() -> nn.Module:
    # TransformerEncoder deep-copies its layer: in torch's own init both layers start equal.
    return nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2)


TORCH_ROWS = [
    _torch_row("lstm", "torch nn.LSTM", lambda: nn.LSTM(16, 32, num_layers=2), (5, 2, 16)),
    _torch_row("gru", "torch nn.GRU", lambda: nn.GRU(16, 32), (5, 2, 16)),
    _torch_row("transformer-encoder", "torch nn.TransformerEncoder", _encoder, (2, 5, 32)),
    _torch_row("conv-grouped", "torch grouped conv", lambda: nn.Conv2d(8, 16, 3, groups=4), (2, 8, 10, 10)),
    _torch_row("conv-depthwise", "torch depthwise conv", lambda: nn.Conv2d(8, 8, 3, groups=8), (2, 8, 10, 10)),
    _torch_row("conv-transposed", "torch transposed conv", lambda: nn.ConvTranspose2d(8, 4, 3), (2, 8, 6, 6)),
]

ROWS: list[Row] = [*HF_ROWS, *TORCH_ROWS]


# -- shared helpers -------------------------------------------------------------------------------


def build_on(row: Row, device: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    with torch.device(device):
        return row.build()


def alias_groups(model: nn.Module) -> set[frozenset[str]]:
    """Names that share one Parameter object (tied weights)."""
    by_id: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), []).append(name)
    return {frozenset(names) for names in by_id.values() if len(names) > 1}


def tensor_names(model: nn.Module) -> list[str]:
    """The state_dict's names with tied parameters once (the first name torch gives them)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    first = set(dict(model.named_parameters()))
    return [name for name in model.state_dict() if name in first or name not in every]


def initialize(row: Row, client: Client, seed: int) -> nn.Module:
    model = build_on(row, "meta")
    client.initialize_module(model, policy=row.policy_json(), seed=seed)
    return model


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def forward(model: nn.Module, inputs: tuple[Any, ...] | dict[str, Any]) -> Any:
    model.eval()
    with torch.no_grad():
        return model(**inputs) if isinstance(inputs, dict) else model(*inputs)


# -- load: the model handed back is usable as it was ------------------------------------------------


@dataclass
class LoadReport:
    """Problems by aspect: load (the call, strict load, state_dict, parameter count, no meta), ties,
    buffers, forward."""

    load: list[str] = field(default_factory=list)
    ties: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    forward: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [*self.load, *self.ties, *self.buffers, *self.forward]


def load_report(row: Row, client: Client, seed: int = 0) -> LoadReport:
    report = LoadReport()
    cpu, model = build_on(row, "cpu"), build_on(row, "meta")
    before = alias_groups(model)
    try:
        client.initialize_module(model, policy=row.policy_json(), seed=seed)
    except Exception as exc:
        report.load.append(f"initialize_module raised {_error(exc)}")
        return report
    report.load += _meta_left(model) + _state_problems(model, cpu)
    theirs, ours = alias_groups(cpu), alias_groups(model)
    if ours != theirs or ours != before:
        report.ties.append(f"tied {_groups(theirs)} on CPU, {_groups(before)} before the call, {_groups(ours)} after")
    report.buffers += _buffer_problems(model, cpu)
    report.forward += _forward_problems(row, model)
    return report


def check_load(row: Row, client: Client) -> list[str]:
    """No meta tensor left, strict load, the CPU model's ties, parameter count, buffers; a finite forward."""
    return load_report(row, client).problems


def _groups(groups: set[frozenset[str]]) -> str:
    return "{" + "; ".join(sorted(" = ".join(sorted(g)) for g in groups)) + "}" if groups else "nothing"


def _meta_left(model: nn.Module) -> list[str]:
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    meta = [name for name, t in named if t.is_meta]
    return (
        [f"{len(meta)} tensors still on meta: {', '.join(meta[:4])}{', ...' if len(meta) > 4 else ''}"] if meta else []
    )


def _state_problems(model: nn.Module, cpu: nn.Module) -> list[str]:
    problems = []
    ours, theirs = set(model.state_dict()), set(cpu.state_dict())
    if ours != theirs:
        problems.append(f"state_dict keys differ: missing {sorted(theirs - ours)}, extra {sorted(ours - theirs)}")
    counts = [sum(p.numel() for p in m.parameters()) for m in (model, cpu)]
    if counts[0] != counts[1]:
        problems.append(f"{counts[0]} parameters after the call, {counts[1]} on CPU")
    try:
        copy.deepcopy(model).load_state_dict(cpu.state_dict(), strict=True)
    except Exception as exc:
        problems.append(f"load_state_dict(strict=True) of the CPU model's state raised {_error(exc)}")
    return problems


def _buffer_problems(model: nn.Module, cpu: nn.Module) -> list[str]:
    ours = dict(model.named_buffers())
    problems = []
    for name, theirs in cpu.named_buffers():
        mine = ours.get(name)
        if mine is None:
            problems.append(f"buffer {name} is missing")
        elif mine.is_meta:
            problems.append(f"buffer {name} is on meta")
        elif mine.dtype != theirs.dtype or mine.shape != theirs.shape or not torch.equal(mine, theirs):
            problems.append(f"buffer {name} differs from its constructor's value")
    return problems


def _forward_problems(row: Row, model: nn.Module) -> list[str]:
    try:
        out = list(_tensors(forward(model, row.example_input())))
    except Exception as exc:
        return [f"forward raised {_error(exc)}"]
    if not out:
        return ["forward returned no tensor"]
    bad = sum(1 for t in out if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    return [f"{bad} of {len(out)} outputs of the forward pass are not finite"] if bad else []


# -- laws: each tensor follows the law its framework draws it from ---------------------------------


@dataclass
class LawReport:
    """Per tensor (tied names once): KS p-values, exact constants, and random tensors too small to test."""

    seeds: int = 1  # ours pooled over this many seeds
    ks: dict[str, float] = field(default_factory=dict)
    exact: dict[str, bool] = field(default_factory=dict)  # deterministic in the framework: equal bit for bit
    small: list[str] = field(default_factory=list)  # random, fewer than KS_MIN_ELEMENTS values even pooled
    problems: list[str] = field(default_factory=list)


def law_report(row: Row, client: Client) -> LawReport:
    names = tensor_names(build_on(row, "cpu"))
    theirs = own_init(row, names, REFERENCE_COPIES)
    fixed = {name: (values == values[0]).all(dim=0) for name, values in theirs.items()}
    report = LawReport(seeds=_seeds_needed(theirs, fixed))
    if report.seeds > REFERENCE_COPIES:
        theirs = own_init(row, names, report.seeds)
    ours: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for seed in range(report.seeds):
        try:
            state = initialize(row, client, seed).state_dict()
        except Exception as exc:
            report.problems.append(f"initialize_module raised {_error(exc)}")
            return report
        for name in names:
            if name not in state:
                report.problems.append(f"{name}: not in the state_dict after the call")
                return report
            ours[name].append(state[name].detach())
    for name in names:
        _compare(name, ours[name], theirs[name], fixed[name], report)
    return report


def check_laws(row: Row, client: Client) -> list[str]:
    """Per tensor, the framework's own law: two-sample KS on 1,000 values or more, constants exact."""
    return law_report(row, client).problems


def own_init(row: Row, names: list[str], copies: int) -> dict[str, torch.Tensor]:
    """The framework's own init: each tensor of `copies` models built on CPU, stacked on dim 0."""
    states = [build_on(row, "cpu", seed).state_dict() for seed in range(copies)]
    return {name: torch.stack([s[name].detach() for s in states]) for name in names}


def _seeds_needed(theirs: dict[str, torch.Tensor], fixed: dict[str, torch.Tensor]) -> int:
    # A random tensor smaller than the KS threshold is pooled over seeds of ours (and as many copies
    # of theirs) until it reaches it, up to MAX_SEEDS.
    random = [int((~fixed[name]).sum()) for name in theirs]
    reachable = [n for n in random if n and n * MAX_SEEDS >= KS_MIN_ELEMENTS]
    return max([1, *(math.ceil(KS_MIN_ELEMENTS / n) for n in reachable)])


def _compare(name: str, ours: list[torch.Tensor], theirs: torch.Tensor, fixed: torch.Tensor, report: LawReport) -> None:
    if any(t.is_meta for t in ours):
        report.problems.append(f"{name}: still on meta")
        return
    if ours[0].shape != theirs.shape[1:] or ours[0].dtype != theirs.dtype:
        report.problems.append(
            f"{name}: {ours[0].dtype} {list(ours[0].shape)}, theirs {theirs.dtype} {list(theirs.shape[1:])}"
        )
        return
    # One row per copy, one column per element (a 0-d tensor is one column).
    mine, theirs, fixed = torch.stack(ours).reshape(len(ours), -1), theirs.reshape(len(theirs), -1), fixed.reshape(-1)
    if bool(fixed.any()):
        exact = torch.equal(mine[:, fixed], theirs[: len(ours), fixed])
        report.exact[name] = exact
        if not exact:
            what = "constant" if bool(fixed.all()) else f"{int(fixed.sum())} fixed elements"
            report.problems.append(f"{name}: {what} {_describe(theirs[0, fixed])}, ours {_describe(mine[0, fixed])}")
    if bool(fixed.all()):
        return
    x, y = mine[:, ~fixed].double().ravel(), theirs[:, ~fixed].double().ravel()
    z = (x.mean() - y.mean()) / math.sqrt(float(y.var()) * (1 / x.numel() + 1 / y.numel()))
    if abs(float(z)) > MEAN_MAX_Z:
        report.problems.append(
            f"{name}: mean {float(x.mean()):.3g} is {float(z):.1f} standard errors from {_describe(y)}"
        )
    if x.numel() < KS_MIN_ELEMENTS:
        report.small.append(name)
        return
    p = float(stats.ks_2samp(x.numpy(), y.numpy()).pvalue)
    report.ks[name] = p
    if p <= KS_MIN_PVALUE:
        report.problems.append(f"{name}: KS p = {p:.1e}, ours {_describe(x)}, theirs {_describe(y)}")


def _describe(values: torch.Tensor) -> str:
    v = values.double()
    if v.numel() and bool((v == v.ravel()[0]).all()):
        return f"all {float(v.ravel()[0]):g}"
    return f"mean {float(v.mean()):.3g} std {float(v.std()):.3g}"
