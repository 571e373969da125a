"""Every registered scheme sampled on its test geometry: KS p-value against its own law and the
promised vs measured moments, as a markdown table (the figures in docs/schemes.md).

    .venv/bin/python -m benchmarks.scheme_stats

Random elementwise laws get a one-sample KS test against the law the scheme resolved to; sparse
against N(0, std) on its nonzeros, identity_plus_noise on its noise; the orthogonal family and the
deterministic patterns report their exact structural error instead.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from scipy import stats

from initium.service.materialize.sampling import Stream, sample
from initium.service.plan import distributions as d
from initium.service.plan.schemes import list_schemes, resolve
from tests.service.plan.test_schemes import _geometry, _params, _scipy_law


def ks_or_structure(dist: d.Distribution, w: np.ndarray) -> str:
    if isinstance(dist, (d.Uniform, d.Normal, d.TruncatedNormal)):
        return f"KS p = {stats.kstest(w.ravel(), _scipy_law(dist).cdf).pvalue:.3f}"
    if isinstance(dist, d.Sparse):
        p = stats.kstest(w[w != 0], "norm", args=(0, dist.scale)).pvalue
        return f"KS p = {p:.3f} (nonzeros); zeros per column exactly {dist.zeros}"
    if isinstance(dist, d.Eye) and dist.noise > 0:
        rows, cols = np.indices(w.shape)
        noise = w - np.where(rows % dist.cols == cols, dist.gain, 0.0)
        return f"KS p = {stats.kstest(noise.ravel(), 'norm', args=(0, dist.noise)).pvalue:.3f} (noise)"
    if isinstance(dist, (d.Orthogonal, d.LooksLinear, d.DeltaOrthogonal)):
        m = _orthogonal_part(dist, w)
        gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        gain = dist.gain
        return f"max abs(W^T W - g^2 I) = {np.abs(gram - gain**2 * np.eye(gram.shape[0])).max():.1e}"
    return "deterministic pattern (exact)"


def _orthogonal_part(dist: d.Distribution, w: np.ndarray) -> np.ndarray:
    if isinstance(dist, d.LooksLinear):
        return w[:, : w.shape[1] // 2].reshape(dist.rows, dist.half_cols)
    if isinstance(dist, d.DeltaOrthogonal):
        return w.reshape(dist.out_channels, dist.in_channels, dist.kernel)[:, :, dist.centre]
    return w.reshape(w.shape[0], -1)


def main() -> int:
    print("| scheme | shape | law | expected mean | mean | expected std | std | check |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |")
    for name in list_schemes():
        geometry = _geometry(name)
        dist = resolve(_params(name), geometry)
        # Each scheme gets its own key, as each tensor does in a job.
        w = sample(dist, geometry.shape, Stream((2026, zlib.crc32(name.encode())), torch.device("cpu"))).numpy()
        print(
            f"| {name} | {list(geometry.shape)} | {dist.family} | {dist.mean:.5g} | {w.mean():.5g} | "
            f"{dist.std:.5g} | {w.std():.5g} | {ks_or_structure(dist, w)} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
