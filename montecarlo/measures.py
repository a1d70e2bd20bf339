"""Risk measures on scenario losses (DESIGN.md, "Risk model").

With k = ceil((1 - alpha) M) tail scenarios out of M:

* VaR_alpha = the k-th largest loss,
* ES_alpha = the mean of the k largest losses,
* component ES_i = mean over the tail scenarios of -e_i r[s, i] (Euler allocation, Tasche 2008);
  the components sum to ES.

Losses are positive numbers (loss = -P&L). Functions take arrays of any backend and use partial
selection (``partition``), never a full sort of the M scenarios.
"""

from __future__ import annotations

import math
from typing import Any

from montecarlo.backend import array_namespace
from montecarlo.errors import InvalidParameter


def check_alpha(alpha: Any) -> float:
    """Validate a confidence level: a finite number in the open interval (0, 1)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise InvalidParameter("alpha", f"must be a number in (0, 1), got {alpha!r}") from None
    if not (math.isfinite(a) and 0.0 < a < 1.0):
        raise InvalidParameter("alpha", f"must be in (0, 1), got {alpha!r}")
    return a


def tail_count(alpha: float, m: int) -> int:
    """k = ceil((1 - alpha) m), at least 1 and at most m.

    The product is rounded to 9 decimals first so that alpha = 0.99 and m = 100000 give exactly
    1000 and not 1001 from binary rounding of 1 - 0.99.
    """
    if m < 1:
        raise InvalidParameter("scenarios", f"must be >= 1, got {m}")
    k = math.ceil(round((1.0 - check_alpha(alpha)) * m, 9))
    return min(max(k, 1), m)


def top_k(losses: Any, k: int, overwrite: bool = False) -> Any:
    """The k largest values along the last axis, unordered; (..., m) -> (..., k).

    A fresh array (not a view into the partitioned one), so holding the result does not keep
    the m values alive. ``overwrite`` partitions ``losses`` in place (for temporaries), which
    saves copying all m values.
    """
    xp = array_namespace(losses)
    m = int(losses.shape[-1])
    if k >= m:
        return losses
    if overwrite:
        losses.partition(m - k, axis=-1)
        return losses[..., m - k :].copy()
    return xp.partition(losses, m - k, axis=-1)[..., m - k :].copy()


def value_at_risk(losses: Any, alpha: float) -> Any:
    """VaR: the k-th largest loss along the last axis; (..., M) -> (...)."""
    k = tail_count(alpha, int(losses.shape[-1]))
    return top_k(losses, k).min(axis=-1)


def expected_shortfall(losses: Any, alpha: float) -> Any:
    """ES: the mean of the k largest losses along the last axis; (..., M) -> (...)."""
    k = tail_count(alpha, int(losses.shape[-1]))
    return top_k(losses, k).mean(axis=-1)


def tail_weights(losses: Any, var: Any, k: int) -> Any:
    """Weights of each scenario in the ES tail, splitting ties at VaR evenly.

    Scenarios with loss > VaR weigh 1; the ``k - n_gt`` remaining places are shared equally by
    the ``n_eq`` scenarios whose loss equals VaR. The weights sum to k, and
    ``sum(w * loss) / k`` is exactly the mean of the k largest losses, whatever the order of
    the scenarios. losses (..., M), var (...) -> (..., M).
    """
    xp = array_namespace(losses)
    v = var[..., None]
    gt = losses > v
    eq = losses == v
    n_gt = gt.sum(axis=-1, keepdims=True)
    n_eq = eq.sum(axis=-1, keepdims=True)
    share = (k - n_gt) / xp.maximum(n_eq, 1)
    return gt + eq * share


def component_es(returns: Any, exposures: Any, alpha: float) -> Any:
    """Euler contributions to ES of one portfolio.

    Parameters
    ----------
    returns : (M, n) scenario returns.
    exposures : (n,) USD exposures e_i.

    Returns
    -------
    (n,) contributions c_i = sum_s w_s (-e_i r[s, i]) / k, which sum to ES.
    """
    losses = -(returns @ exposures)
    k = tail_count(alpha, int(losses.shape[0]))
    var = top_k(losses, k).min()
    w = tail_weights(losses, var, k)
    return -exposures * (w @ returns) / k


def batch_stderr(batch_values: Any) -> Any:
    """Batch-means standard error: std over B independent batches / sqrt(B); (B, ...) -> (...).

    NaN where there is only one batch.
    """
    xp = array_namespace(batch_values)
    b = int(batch_values.shape[0])
    if b < 2:
        return xp.full(batch_values.shape[1:], xp.nan)
    return batch_values.std(axis=0, ddof=1) / math.sqrt(b)


def what_if(pnl: Any, returns_i: Any, delta_exposure: float, alpha: float) -> dict[str, float]:
    """Change in VaR and ES when exposure ``delta_exposure`` (USD) to one asset is added.

    Reuses the account's scenario P&L: P&L' = P&L + r[:, i] * delta_e (DESIGN.md, "Margin").

    Parameters
    ----------
    pnl : (M,) the account's scenario P&L.
    returns_i : (M,) the scenario returns of the asset whose exposure changes.
    """
    after = pnl + returns_i * delta_exposure
    var0, es0 = value_at_risk(-pnl, alpha), expected_shortfall(-pnl, alpha)
    var1, es1 = value_at_risk(-after, alpha), expected_shortfall(-after, alpha)
    out = {
        "var_before": float(var0),
        "es_before": float(es0),
        "var_after": float(var1),
        "es_after": float(es1),
    }
    out["var_change"] = out["var_after"] - out["var_before"]
    out["es_change"] = out["es_after"] - out["es_before"]
    return out
