"""The statistics drift is measured with: PSI over quantile bins or categories, and KS.

Two samples at hand get the exact two-sample Kolmogorov-Smirnov test of
``scipy.stats.ks_2samp``; a sample against a profile gets an approximate one
(:func:`ks_against_profile`) over the CDF the profile's 101 quantiles describe
(:class:`ProfileCDF`).

numpy and scipy are imported only when a function is called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbmlops.exceptions import DriftError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "EPSILON",
    "LEVELS",
    "DriftError",
    "ProfileCDF",
    "check_bins",
    "edges_from_quantiles",
    "edges_from_sorted",
    "finite_sorted",
    "ks_against_profile",
    "ks_sorted",
    "order_index",
    "psi",
    "psi_categorical",
    "psi_of_shares",
    "shares_from_cdf",
    "shares_sorted",
]

EPSILON = 1e-4  # the smallest share a bin or category counts with in the PSI
LEVELS = 100  # a profile holds the quantiles at 0/100, 1/100, ..., 100/100


def psi(reference: Iterable[float], current: Iterable[float], bins: int = 10) -> float:
    """The population stability index of ``current`` against ``reference`` (numbers).

    The bins are cut at the reference's ``bins``-quantiles (``inverted_cdf``: values of the
    reference; duplicates merged, so data with ties has fewer bins) with open outer bins, each
    bin holding the values above its lower edge up to its upper edge. A bin's share below
    ``EPSILON`` (1e-4) counts as 1e-4. NaN and infinite values are left out.

    Raises:
        DriftError: when either side has no finite value, or ``bins`` is below 2.
    """
    check_bins(bins)
    ref = finite_sorted(_floats(reference))
    cur = finite_sorted(_floats(current))
    if not ref.size or not cur.size:
        raise DriftError("psi() needs at least one finite value on each side")
    edges = edges_from_sorted(ref, bins)
    return psi_of_shares(shares_sorted(ref, edges), shares_sorted(cur, edges))


def psi_categorical(reference_counts: Mapping[Any, int], current_counts: Mapping[Any, int]) -> float:
    """The population stability index of two value -> count mappings.

    Categories seen on one side only count with a share of ``EPSILON`` (1e-4) on the other
    (as does any share below it).

    Raises:
        DriftError: when either side has no count.
    """
    import numpy as np

    keys = list(dict.fromkeys([*reference_counts, *current_counts]))
    ref = np.array([reference_counts.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([current_counts.get(k, 0) for k in keys], dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise DriftError("psi_categorical() needs a positive count on each side")
    return psi_of_shares(ref / ref.sum(), cur / cur.sum())


def psi_of_shares(ref: np.ndarray, cur: np.ndarray) -> float:
    """The PSI of two share vectors over the same bins, each share at least ``EPSILON``."""
    import numpy as np

    ref, cur = np.maximum(ref, EPSILON), np.maximum(cur, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def check_bins(bins: int) -> None:
    """Raise a DriftError unless ``bins`` is an integer of at least 2."""
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        raise DriftError(f"bins must be an integer of at least 2, not {bins!r}")


def _floats(values: Iterable[float]) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if isinstance(values, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        return pd.Series(values).to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return np.asarray(values if hasattr(values, "__len__") else list(values), dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DriftError(f"expected numbers ({e}); use psi_categorical() for labels") from None


def finite_sorted(values: np.ndarray, owned: bool = False) -> np.ndarray:
    """The finite values, sorted; ``owned`` arrays may be sorted in place."""
    import numpy as np

    finite = np.isfinite(values)
    if not finite.all():
        values, owned = values[finite], True
    if owned:
        values.sort()
        return values
    return np.sort(values)


def order_index(n: int, levels: np.ndarray) -> np.ndarray:
    """Positions of the ``inverted_cdf`` quantiles at ``levels`` in a sorted array of ``n``
    values, computed as numpy's ``np.quantile(..., method="inverted_cdf")`` computes them."""
    import numpy as np

    virtual = n * levels - 1
    below = np.floor(virtual)
    index = np.where(virtual - below == 0, below, below + 1).astype(np.intp)
    return np.clip(index, 0, n - 1)


def edges_from_sorted(values: np.ndarray, bins: int) -> np.ndarray:
    """The distinct ``bins``-quantiles of sorted values: the inner edges of the PSI bins."""
    import numpy as np

    levels = np.arange(1, bins) / bins
    return np.unique(values[order_index(values.size, levels)])


def edges_from_quantiles(quantiles: np.ndarray, bins: int) -> np.ndarray:
    """Edges at the profile's percentiles nearest to the ``bins``-quantiles (exact when
    ``bins`` divides 100)."""
    import numpy as np

    index = np.rint(np.arange(1, bins) * LEVELS / bins).astype(np.intp)
    return np.unique(quantiles[index])


def shares_sorted(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of sorted values in the bins (-inf, e0], (e0, e1], ..., (e_last, +inf)."""
    import numpy as np

    return shares_from_cdf(np.searchsorted(values, edges, side="right") / values.size)


def shares_from_cdf(cumulative: np.ndarray) -> np.ndarray:
    """Shares of the bins whose upper edges have the CDF values ``cumulative`` (the last bin open)."""
    import numpy as np

    return np.diff(np.concatenate(([0.0], cumulative, [1.0])))


def ks_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The two-sample KS statistic and two-sided p-value of ``scipy.stats.ks_2samp`` (exact up to
    10,000 values a side, else asymptotic) for two NaN-free samples."""
    from scipy.stats import ks_2samp

    result = ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class ProfileCDF:
    """The CDF of a profiled column: known at its quantiles, linear between them.

    ``knots`` are the distinct quantiles; ``at`` and ``below`` the shares of values at most
    and below each (they differ where a value repeats).
    """

    quantiles: np.ndarray  # all 101, for the bin edges
    knots: np.ndarray
    at: np.ndarray
    below: np.ndarray

    @classmethod
    def from_profile(cls, quantiles: list[float], at: list[float], below: list[float]) -> ProfileCDF:
        """The CDF a profile's ``quantiles``, ``cdf`` and ``cdf_left`` lists describe."""
        import numpy as np

        q = np.asarray(quantiles, dtype=np.float64)
        knots, first = np.unique(q, return_index=True)
        return cls(
            q,
            knots,
            np.asarray(at, dtype=np.float64)[first],
            np.asarray(below, dtype=np.float64)[first],
        )

    def __call__(self, x: np.ndarray, left: bool = False) -> np.ndarray:
        """F(x), or with ``left`` the limit from the left F(x-)."""
        import numpy as np

        k = self.knots
        j = np.searchsorted(k, x, side="right")  # knots at most x
        m = np.clip(j - 1, 0, k.size - 1)
        nxt = np.clip(j, 0, k.size - 1)
        on_knot = (j > 0) & (k[m] == x)
        span = k[nxt] - k[m]
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.where(span > 0, (x - k[m]) / span, 0.0)
        start, end = self.at[m], np.maximum(self.below[nxt], self.at[m])
        between = start + t * (end - start)
        cdf = np.where(on_knot, self.below[m] if left else self.at[m], between)
        return np.where(j == 0, 0.0, np.where((j == k.size) & ~on_knot, 1.0, cdf))


def ks_against_profile(cdf: ProfileCDF, ref_count: int, cur: np.ndarray) -> tuple[float, float]:
    """Approximate KS of sorted values against a profile: the largest gap between the profile's
    CDF and the current ECDF (checked on both sides of every current value), p-value from the
    asymptotic two-sample distribution with the reference's row count (as ``ks_2samp`` computes
    it for large samples)."""
    import numpy as np
    from scipy.stats import kstwo

    n = cur.size
    upper = np.searchsorted(cur, cur, side="right") / n
    lower = np.searchsorted(cur, cur, side="left") / n
    gap_at = np.abs(cdf(cur) - upper)
    gap_before = np.abs(cdf(cur, left=True) - lower)
    d = float(max(gap_at.max(), gap_before.max()))
    en = ref_count * n / (ref_count + n)
    return d, float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))
