"""Learning-curve extrapolation: where a metric is heading, from its own epochs, with an interval.

A small ensemble of curve families, each ``y = c + a * g(t; theta)`` with ``a >= 0`` (the metric
in its improving direction never gets worse in expectation), fitted to the run's epochs:

- ``pow``: ``g = -t**-alpha`` (power-law saturation, "pow3" in the learning-curve literature),
- ``exp``: ``g = -exp(-beta * t)`` ("exp3"),
- ``weibull``: ``g = -exp(-beta * t**delta)`` (Janoschek/Weibull, a sigmoid-capable shape),
- ``log``: ``g = log(t)`` (never saturates: the pessimistic member that says "still growing").

For a fixed shape parameter the model is linear in ``(c, a)``, so every family is fitted by a
closed-form least-squares solve over a grid of shapes (no optimiser that can fail or wander),
vectorised over the grid and over bootstrap replicates. The fit is robust: points the central
fit leaves more than 1.5 robust standard deviations away get Huber weights. Families are
weighted by AICc (the small-sample Akaike criterion), so a family that fits no better than a
simpler one with fewer parameters counts less. The interval comes from a residual bootstrap per
family (the validation noise the run showed, resampled and refitted), pooled by family weight.

Reference: Domhan, Springenberg, Hutter, "Speeding up automatic hyperparameter optimization of
deep neural networks by extrapolation of learning curves" (IJCAI 2015), whose families these
are a subset of; the closed-form grid fit is ours, chosen so a decision costs milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Shape grids. Exponents cover slow (0.1) to fast (4) power-law saturation; rates cover a
# half-life of ~0.2 to ~35 epochs.
_ALPHAS = np.geomspace(0.1, 4.0, 48)
_BETAS = np.geomspace(0.02, 3.0, 48)
_DELTAS = np.array([0.5, 0.75, 1.5, 2.0])
_HUBER_K = 1.5


@dataclass(frozen=True)
class CurveForecast:
    """Where the fitted curve is now and at the horizon, with a bootstrap interval.

    Values are in the improving direction (negated for a ``min`` metric) as fitted; the
    ``gain`` figures are ``level(horizon) - level(now)``, so they are >= 0.
    """

    level_now: float
    level_end: float
    level_end_low: float
    level_end_high: float
    gain: float
    gain_low: float
    gain_high: float
    expected_gain: float
    """The mean of the bootstrap gains with losses counted as 0: what stopping now is expected
    to give up, the risk-neutral figure a decision threshold compares with."""
    weights: dict[str, float]
    noise: float
    positions: tuple[float, ...]
    fitted: tuple[float, ...]


def _bases(t: np.ndarray) -> dict[str, tuple[np.ndarray, int]]:
    """Each family's basis ``g(t; theta)`` for every grid shape (rows) and its parameter count."""
    t = np.asarray(t, dtype=float)[None, :]
    weib = np.concatenate(
        [-np.exp(-_BETAS[:, None] * t**d) for d in _DELTAS], axis=0
    )  # (len(deltas)*len(betas), n)
    return {
        "pow": (-(t ** -_ALPHAS[:, None]), 3),
        "exp": (-np.exp(-_BETAS[:, None] * t), 3),
        "weibull": (weib, 4),
        "log": (np.log(t), 2),
    }


def _fit(
    g: np.ndarray, y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted fit of ``y = c + a g`` with ``a >= 0`` for every shape row of ``g``.

    Args:
        g: (K, n) bases; y: (n, B) replicates; w: (n,) weights.

    Returns:
        (best shape index (B,), a (B,), c (B,), weighted RSS (B,)).
    """
    sw = w.sum()
    gm = (g * w).sum(axis=1, keepdims=True) / sw  # (K, 1)
    ym = (w[:, None] * y).sum(axis=0, keepdims=True) / sw  # (1, B)
    gc = g - gm  # (K, n)
    yc = y - ym  # (n, B)
    sgg = (w * gc * gc).sum(axis=1)  # (K,)
    sgy = (gc * w) @ yc  # (K, B)
    syy = (w[:, None] * yc * yc).sum(axis=0)  # (B,)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sgg[:, None] > 1e-18, sgy / sgg[:, None], 0.0)
    a = np.maximum(a, 0.0)
    rss = syy[None, :] - 2 * a * sgy + a * a * sgg[:, None]  # (K, B)
    best = np.argmin(rss, axis=0)
    cols = np.arange(y.shape[1])
    a_best = a[best, cols]
    c_best = ym[0] - a_best * gm[best, 0]
    return best, a_best, c_best, np.maximum(rss[best, cols], 0.0)


def forecast_curve(
    positions: Sequence[float],
    values: Sequence[float],
    horizon: float,
    *,
    confidence: float = 0.9,
    replicates: int = 64,
    seed: int = 0,
) -> CurveForecast | None:
    """Fit the ensemble to ``values`` at ``positions`` (>= 1) and forecast ``horizon``.

    Args:
        positions: Where each value was measured (epochs counted from 1), increasing.
        values: The metric, higher is better (negate a loss first).
        horizon: The position to forecast (the run's last epoch), >= the last position.
        confidence: The central interval's coverage, e.g. 0.9 for the 5th-95th percentiles.
        replicates: Bootstrap replicates per family.
        seed: Seed of the bootstrap's resampling (fixed: the same records give the same answer).

    Returns:
        The forecast, or None with fewer than 4 points.
    """
    t = np.asarray(positions, dtype=float)
    y = np.asarray(values, dtype=float)
    n = len(t)
    if n < 4 or len(y) != n:
        return None
    scale = float(np.max(np.abs(y))) or 1.0
    bases = _bases(np.append(t, [t[-1], float(horizon)]))
    # Central fits, then Huber weights from the residuals of the best-fitting family.
    w = np.ones(n)
    fits: dict[str, tuple[int, float, float, float, int]] = {}
    for _ in range(2):
        fits = {}
        for name, (g, k) in bases.items():
            if n < k + 2:
                continue
            best, a_fit, c_fit, rss_fit = _fit(g[:, :n], y[:, None], w)
            fits[name] = (int(best[0]), float(a_fit[0]), float(c_fit[0]), float(rss_fit[0]), k)
        ref = min(fits.values(), key=lambda f: f[3])
        gref = bases[_name_of(fits, ref)][0][ref[0], :n]
        resid = y - (ref[2] + ref[1] * gref)
        s = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        if s <= 1e-12 * scale:
            break
        w = np.minimum(1.0, _HUBER_K * s / np.maximum(np.abs(resid), 1e-300))
    # AICc weights on the weighted RSS (a floor keeps a perfect fit from dividing by zero).
    floor = (1e-9 * scale) ** 2 * n
    aicc: dict[str, float] = {}
    for name, (_, _, _, rss, k) in fits.items():
        aicc[name] = float(n * np.log(max(rss, floor) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1))
    low = min(aicc.values())
    raw = {name: float(np.exp(-(v - low) / 2)) for name, v in aicc.items()}
    total = sum(raw.values())
    weights = {name: v / total for name, v in raw.items()}
    rng = np.random.default_rng(seed)
    pooled_gain: list[np.ndarray] = []
    pooled_end: list[np.ndarray] = []
    pooled_w: list[np.ndarray] = []
    level_now = level_end = 0.0
    fitted = np.zeros(n)
    noise_var = 0.0
    for name, (idx, a, c, rss, k) in fits.items():
        g = bases[name][0]
        curve = c + a * g[idx]
        now, end = curve[n], curve[n + 1]
        level_now += weights[name] * now
        level_end += weights[name] * end
        fitted += weights[name] * curve[:n]
        noise_var += weights[name] * rss / max(w.sum() - k, 1.0)
        resid = (y - curve[:n]) * np.sqrt(n / max(n - k, 1))
        resid -= resid.mean()
        draws = rng.integers(0, n, size=(n, replicates))
        y_star = curve[:n, None] + resid[draws]
        best, a_s, c_s, _ = _fit(g[:, :n], y_star, w)
        now_s = c_s + a_s * g[best, n]
        end_s = c_s + a_s * g[best, n + 1]
        pooled_gain.append(end_s - now_s)
        pooled_end.append(end_s)
        pooled_w.append(np.full(replicates, weights[name] / replicates))
    gains = np.concatenate(pooled_gain)
    ends = np.concatenate(pooled_end)
    ws = np.concatenate(pooled_w)
    lo_q, hi_q = (1 - confidence) / 2, (1 + confidence) / 2
    return CurveForecast(
        level_now=float(level_now),
        level_end=float(level_end),
        level_end_low=_quantile(ends, ws, lo_q),
        level_end_high=_quantile(ends, ws, hi_q),
        gain=float(level_end - level_now),
        gain_low=_quantile(gains, ws, lo_q),
        gain_high=_quantile(gains, ws, hi_q),
        expected_gain=float(np.sum(ws * np.maximum(gains, 0.0)) / np.sum(ws)),
        weights=weights,
        noise=float(np.sqrt(noise_var)),
        positions=tuple(float(x) for x in t),
        fitted=tuple(float(x) for x in fitted),
    )


def _name_of(fits: dict[str, tuple[int, float, float, float, int]], fit: tuple) -> str:
    return next(name for name, f in fits.items() if f is fit)


def _quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    """Weighted quantile (the smallest value whose cumulative weight reaches ``q``)."""
    order = np.argsort(x)
    cum = np.cumsum(w[order])
    cum /= cum[-1]
    i = int(np.searchsorted(cum, q, side="left"))
    return float(x[order][min(i, len(x) - 1)])
