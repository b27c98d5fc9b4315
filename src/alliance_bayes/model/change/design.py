"""The change family's data: every client's baseline, the follow-ups observed, care types, providers.

Selection into the elevated group is on the *observed* baseline, so the model needs every client,
elevated or not: the unselected clients tell it where the population's true baseline lies, and
therefore how far the selected ones will regress towards it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alliance_bayes.data.frame import AnalysisFrame
from alliance_bayes.errors import DesignError
from alliance_bayes.model.spec import OUTCOMES, ModelSpec

__all__ = ["CARE_TYPES", "ChangeDesign", "direction", "prepare_change", "short_name"]

CARE_TYPES = ("therapist", "coach", "both")
PROVIDER_TYPES = ("therapist", "coach")


def short_name(spec: ModelSpec) -> str:
    """``"who5"`` or ``"phq9"``: the prefix of the estimand names."""
    return spec.outcome.split("_")[0]


def direction(spec: ModelSpec) -> tuple[float, float]:
    """``(sign, cutoff)``: +1 where higher is better (WHO-5), −1 where lower is (PHQ-9).

    On the oriented scale sign·X, "elevated at baseline" is always sign·X₁ <= sign·cutoff and
    improvement is always an increase.
    """
    if short_name(spec) == "phq9":
        return -1.0, float(spec.data.phq9_cutoff)
    return 1.0, float(spec.data.who5_cutoff)


@dataclass
class ChangeDesign:
    """Arrays of the change model.

    Attributes
    ----------
    x1 : (n,) float
        Observed baseline of every client in the model.
    x2 : (m,) float
        Observed follow-ups; ``followed`` (m,) int are their clients' positions.
    care : (n,) int
        Care type, positions in :data:`CARE_TYPES`.
    member_index, member_weight : (n, K)
        Multiple membership (:meth:`AnalysisFrame.membership_arrays`): provider positions and
        session-share weights, rows summing to 1.
    provider_type : (P,) int
        Positions in :data:`PROVIDER_TYPES`.
    """

    frame: AnalysisFrame
    x1: np.ndarray
    x2: np.ndarray
    followed: np.ndarray
    care: np.ndarray
    member_index: np.ndarray
    member_weight: np.ndarray
    provider_type: np.ndarray
    sign: float
    cutoff: float
    exclusions: dict[str, int] = field(default_factory=dict)

    @property
    def n_clients(self) -> int:
        return int(self.x1.size)

    def elevated(self) -> np.ndarray:
        """Clients elevated at baseline by the observed score (the paper's rule)."""
        return self.sign * self.x1 <= self.sign * self.cutoff

    def scales(self) -> dict[str, object]:
        """Sample facts the estimands need (kept in ``run.json``).

        ``baseline_sd`` is the SD of the observed baseline over every client in the model, the
        Var(X) of σ_e² = (1 − ρ)·Var(X) and the SD of the reliable-change criterion.
        """
        counts = np.bincount(self.care, minlength=len(CARE_TYPES))
        elevated = self.elevated()
        both = elevated[self.followed]
        naive = self.x2[both] - self.x1[self.followed][both]
        return {
            "baseline_mean": float(self.x1.mean()),
            "baseline_sd": float(self.x1.std(ddof=1)),
            "care_share": {
                c: float(k / counts.sum()) for c, k in zip(CARE_TYPES, counts, strict=True)
            },
            "cutoff": self.cutoff,
            "sign": self.sign,
            "n_elevated": int(elevated.sum()),
            "elevated_baselines": {
                c: _distribution(self.x1[elevated & (self.care == k)])
                for k, c in enumerate(CARE_TYPES)
            },
            "n_elevated_followed": int(both.sum()),
            # The paper's quantity: the mean observed change of the elevated with a follow-up.
            "naive_change_elevated": float(naive.mean()) if naive.size else float("nan"),
        }


#: At most this many support points per care type in ``elevated_baselines`` (``run.json``).
MAX_SUPPORT = 400


def _distribution(x: np.ndarray) -> dict[str, list[float]]:
    """Distinct values and counts; more than :data:`MAX_SUPPORT` become as many quantiles."""
    values, counts = np.unique(x, return_counts=True)
    if values.size > MAX_SUPPORT:
        u = (np.arange(MAX_SUPPORT) + 0.5) / MAX_SUPPORT
        values = np.quantile(x, u)
        counts = np.full(MAX_SUPPORT, x.size / MAX_SUPPORT)
    return {"values": values.tolist(), "counts": counts.astype(float).tolist()}


def prepare_change(spec: ModelSpec, frame: AnalysisFrame) -> ChangeDesign:
    """Every client with an observed baseline; follow-ups where observed (missing at random).

    Raises
    ------
    DesignError
        Fewer than 20 clients with a baseline, or fewer than 10 with a follow-up.
    """
    baseline, outcome = OUTCOMES[spec.outcome][0], spec.outcome
    clients = frame.clients
    has_baseline = clients[baseline].notna().to_numpy()
    exclusions = {
        "clients_in_data": len(clients),
        f"missing_{baseline}": int((~has_baseline).sum()),
    }
    sub = frame.select(has_baseline)
    c = sub.clients
    x1 = c[baseline].to_numpy(dtype=np.float64)
    y = c[outcome].to_numpy(dtype=np.float64)
    followed = np.flatnonzero(np.isfinite(y))
    exclusions["clients_in_model"] = int(x1.size)
    exclusions[f"without_{outcome}_baseline_only"] = int(x1.size - followed.size)
    if x1.size < 20 or followed.size < 10:
        raise DesignError(
            f"{spec.source}: {x1.size} clients with a baseline and {followed.size} with a "
            f"follow-up ({exclusions}); at least 20 and 10 are needed"
        )
    index, weight = sub.membership_arrays()
    ptype = sub.providers["provider_type"].astype(str).map(PROVIDER_TYPES.index).to_numpy()
    sign, cutoff = direction(spec)
    if not np.any(sign * x1 <= sign * cutoff):
        raise DesignError(
            f"{spec.source}: no client is elevated at baseline ({outcome.split('_')[0]} "
            f"{'<=' if sign > 0 else '>='} {cutoff:g}), so there is no change among the elevated "
            "to estimate"
        )
    return ChangeDesign(
        frame=sub,
        x1=x1,
        x2=y[followed],
        followed=followed.astype(np.int64),
        care=c["care_type"].astype(str).map(CARE_TYPES.index).to_numpy(dtype=np.int64),
        member_index=index,
        member_weight=weight,
        provider_type=ptype.astype(np.int64),
        sign=sign,
        cutoff=cutoff,
        exclusions=exclusions,
    )
