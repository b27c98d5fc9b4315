r"""The analysis frame: one row per client, pseudonymised, with everything the models consume.

:func:`build_frame` turns a validated :class:`~alliance_bayes.data.load.RawStudy` into an
:class:`AnalysisFrame`. Everything here is derived, never supplied by the user.

Definitions
-----------
Let client :math:`i` have :math:`n_{ip}` sessions with provider :math:`p` and
:math:`n_i = \sum_p n_{ip}` sessions in all. For a subscale :math:`s` (goal, bond, and task when
measured):

* client alliance :math:`a_{is}` — mean of the client's ratings of item :math:`s` over all their
  sessions (missing items ignored);
* client–provider alliance :math:`a_{ips}` — the same mean over the sessions with :math:`p` only;
* membership weight :math:`w_{ip} = n_{ip} / n_i` (each provider's share of the client's sessions;
  :math:`\sum_p w_{ip} = 1`);
* provider mean :math:`m_{ps} = \operatorname{mean}_{i \in C_p} a_{ips}`, over the clients
  :math:`C_p` who saw :math:`p`, each client weighted equally (clients with no rating of :math:`s`
  with :math:`p` are left out);
* between-provider alliance :math:`b_{is} = \sum_p w_{ip}\, m_{ps}` (the client's
  multiple-membership provider mean);
* within-provider alliance :math:`v_{is} = a_{is} - b_{is}`, so :math:`a_{is} = b_{is} + v_{is}`.

With ``alliance_sessions = k`` (early alliance) every alliance mean above is taken over the client's
first :math:`k` sessions only, while the weights :math:`w_{ip}` still count all sessions: the
client's exposure to a provider does not end with the early sessions.

The composite alliance (the paper's score) is :math:`a_i = (a_{i,\mathrm{goal}} +
a_{i,\mathrm{bond}})/2`; its client–provider value is :math:`(a_{ip,\mathrm{goal}} +
a_{ip,\mathrm{bond}})/2`, from which the composite provider mean, between and within parts follow
exactly as above. Where only one of the two items is available the composite is that item's mean.
If a provider of client :math:`i` has no mean for :math:`s`, :math:`b_{is}` and :math:`v_{is}` are
missing (NaN).

This decomposition follows the within/between provider split of Baldwin, Wampold & Imel (2007),
doi:10.1037/0022-006X.75.6.842, and Falkenström, Finkel, Sandell, Rubel & Holmqvist (2017),
doi:10.1037/ccp0000203, extended to clients who saw more than one provider through the membership
weights.

Pseudonyms
----------
Clients are named ``C00001``, ``C00002``, … in the order of their sorted original ``client_id``
(text order); providers ``P0001``, … in the order of their sorted ``provider_id``. Only providers
with at least one session enter the frame. Original ids are never kept.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from alliance_bayes.data.load import RawStudy

__all__ = [
    "CARE_TYPES",
    "ELEVATED_RULES",
    "PROVIDER_TYPES",
    "AnalysisFrame",
    "build_frame",
]

CARE_TYPES: tuple[str, ...] = ("therapist", "coach", "both")
PROVIDER_TYPES: tuple[str, ...] = ("therapist", "coach")
ELEVATED_RULES: tuple[str, ...] = ("who5", "phq9", "phq9_else_who5")
_ALL_SUBSCALES: tuple[str, ...] = ("goal", "bond", "task")


@dataclass(frozen=True, eq=False, repr=False)
class AnalysisFrame:
    """The pseudonymised analysis frame that the model layer consumes.

    Attributes
    ----------
    clients : pandas.DataFrame
        One row per client, RangeIndex ``0..n-1`` in pseudonym order. Columns: ``client``,
        ``care_type`` (Categorical: therapist, coach, both), ``n_sessions``, ``n_providers``,
        ``age``, ``sex``, ``male`` (1.0 male, 0.0 female or other, NaN when sex is empty), ``country``,
        ``days_in_care``, ``who5_baseline``, ``who5_followup``, ``who5_change``,
        ``phq9_baseline``, ``phq9_followup``, ``phq9_change``, ``elevated``, ``alliance_goal``,
        ``alliance_bond``, ``alliance_task``, ``alliance`` (composite), and for each subscale in
        :attr:`subscales` ``alliance_{s}_between`` / ``alliance_{s}_within``, plus
        ``alliance_between`` / ``alliance_within`` for the composite (see the module docstring).
    providers : pandas.DataFrame
        One row per provider with at least one session, RangeIndex. Columns: ``provider``,
        ``provider_type`` (Categorical: therapist, coach), ``n_clients``, ``n_sessions``,
        ``alliance_{s}_mean`` for each subscale and ``alliance_mean`` (composite); the means are
        the client-weighted :math:`m_{ps}` of the module docstring.
    memberships : pandas.DataFrame
        One row per client–provider pair, sorted by client then provider: ``client_index``,
        ``provider_index`` (row positions in :attr:`clients` / :attr:`providers`), ``n_sessions``
        and ``weight`` (share of the client's sessions; sums to 1 per client).
    sessions : pandas.DataFrame
        One row per session, sorted by client then session: ``client_index``,
        ``provider_index``, ``session_index`` (1, 2, … within the client, in the order of the
        given ``session_index``, else of ``session_date``, ties in file order), ``wai_goal``,
        ``wai_bond``, ``wai_task`` (nullable ``Int64``).
    subscales : tuple of str
        ``("goal", "bond")``, plus ``"task"`` when any task rating is present.
    data_sha256 : str
        The study's :attr:`RawStudy.sha256`.
    elevated_rule : str
        The rule behind ``clients["elevated"]``, in words.
    """

    clients: pd.DataFrame
    providers: pd.DataFrame
    memberships: pd.DataFrame
    sessions: pd.DataFrame
    subscales: tuple[str, ...]
    data_sha256: str
    elevated_rule: str = ""

    def __repr__(self) -> str:
        return (
            f"AnalysisFrame(clients={len(self.clients)}, providers={len(self.providers)}, "
            f"sessions={len(self.sessions)}, subscales={self.subscales}, "
            f"data_sha256={self.data_sha256[:12]}…)"
        )

    # ----------------------------------------------------------------------------------------------
    def membership_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Provider indices and weights as dense arrays for multiple-membership models.

        Returns
        -------
        index : numpy.ndarray of int64, shape (n_clients, K)
            Provider positions (rows of :attr:`providers`) of each client's providers, in
            provider order; ``K`` is the largest number of providers any client saw.
        weight : numpy.ndarray of float64, shape (n_clients, K)
            The matching membership weights; each row sums to 1.

        Notes
        -----
        Clients with fewer than ``K`` providers are padded with index 0 and weight 0.0, so the
        padding contributes nothing to ``effect_i = sum_k weight[i, k] * u[index[i, k]]``.
        """
        n = len(self.clients)
        mem = self.memberships
        k = int(mem.groupby("client_index").size().max()) if len(mem) else 1
        index = np.zeros((n, k), dtype=np.int64)
        weight = np.zeros((n, k), dtype=np.float64)
        slot = mem.groupby("client_index").cumcount().to_numpy()
        rows = mem["client_index"].to_numpy()
        index[rows, slot] = mem["provider_index"].to_numpy()
        weight[rows, slot] = mem["weight"].to_numpy(dtype=np.float64)
        return index, weight

    # ----------------------------------------------------------------------------------------------
    def select(self, mask: np.ndarray | pd.Series | list[bool]) -> AnalysisFrame:
        """Keep the clients where ``mask`` is true.

        Parameters
        ----------
        mask : array-like of bool, length n_clients
            Aligned with :attr:`clients` (a Series must carry the same index).

        Returns
        -------
        AnalysisFrame
            Clients re-indexed ``0..m-1`` (pseudonyms unchanged), only the providers that still
            have a client (re-indexed, in the same order), and memberships and sessions re-pointed.
            Provider ``n_clients`` and ``n_sessions`` count the kept clients.

        Notes
        -----
        Alliance columns are **not** recomputed: client means, provider means
        (``alliance_*_mean``) and the between/within parts stay as computed on every client of the
        study. This is intended — a provider's mean alliance is a property of the provider, best
        estimated from all of their clients' ratings, not only from the clients a model selects.
        """
        n = len(self.clients)
        if isinstance(mask, pd.Series):
            if not mask.index.equals(self.clients.index):
                raise ValueError("mask Series must have the same index as frame.clients")
            mask = mask.to_numpy()
        keep = np.asarray(mask)
        if keep.shape != (n,):
            raise ValueError(f"mask must have shape ({n},), got {keep.shape}")
        if keep.dtype != np.bool_:
            raise ValueError(f"mask must be boolean, got dtype {keep.dtype}")

        client_map = np.full(n, -1, dtype=np.int64)
        client_map[keep] = np.arange(int(keep.sum()))
        mem = self.memberships[keep[self.memberships["client_index"].to_numpy()]]
        kept_providers = np.unique(mem["provider_index"].to_numpy())
        provider_map = np.full(len(self.providers), -1, dtype=np.int64)
        provider_map[kept_providers] = np.arange(len(kept_providers))

        def repoint(df: pd.DataFrame) -> pd.DataFrame:
            out = df.reset_index(drop=True)
            out["client_index"] = client_map[out["client_index"].to_numpy()]
            out["provider_index"] = provider_map[out["provider_index"].to_numpy()]
            return out

        mem = repoint(mem)
        sessions = repoint(self.sessions[keep[self.sessions["client_index"].to_numpy()]])
        providers = self.providers.iloc[kept_providers].reset_index(drop=True)
        counts = mem.groupby("provider_index").agg(
            n_clients=("client_index", "size"), n_sessions=("n_sessions", "sum")
        )
        providers["n_clients"] = counts["n_clients"].to_numpy(dtype=np.int64)
        providers["n_sessions"] = counts["n_sessions"].to_numpy(dtype=np.int64)
        return dataclasses.replace(
            self,
            clients=self.clients[keep].reset_index(drop=True),
            providers=providers,
            memberships=mem,
            sessions=sessions,
        )

    # ----------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """A readable multi-line summary of the frame (for the command line)."""
        c, p = self.clients, self.providers
        care = c["care_type"].value_counts().reindex(CARE_TYPES, fill_value=0)
        ptype = p["provider_type"].value_counts().reindex(PROVIDER_TYPES, fill_value=0)
        followup = c["who5_followup"].notna()
        elevated = c["elevated"].astype(bool)
        per_client = c["n_sessions"]
        lines = [
            f"Analysis frame (data sha256 {self.data_sha256[:12]})",
            f"  clients:   {len(c)} (" + ", ".join(f"{k} {int(care[k])}" for k in CARE_TYPES) + ")",
            f"  providers: {len(p)} ("
            + ", ".join(f"{k} {int(ptype[k])}" for k in PROVIDER_TYPES)
            + ")",
            f"  sessions:  {len(self.sessions)} (per client median {_fmt(per_client.median())}, "
            f"range {_fmt(per_client.min())}–{_fmt(per_client.max())})",
            f"  subscales: {', '.join(self.subscales)}",
            f"  alliance (composite, 1–5): median {_fmt(c['alliance'].median(), 2)}, "
            f"mean {_fmt(c['alliance'].mean(), 2)}",
            f"  WHO-5 follow-up observed: {int(followup.sum())} of {len(c)}",
        ]
        if c["phq9_baseline"].notna().any():
            lines.append(
                f"  PHQ-9 baseline observed: {int(c['phq9_baseline'].notna().sum())}, "
                f"follow-up observed: {int(c['phq9_followup'].notna().sum())}"
            )
        rule = f" [{self.elevated_rule}]" if self.elevated_rule else ""
        lines += [
            f"  elevated at baseline{rule}: {int(elevated.sum())}",
            f"  elevated with WHO-5 follow-up: {int((elevated & followup).sum())}",
        ]
        return "\n".join(lines)


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------
def _elevated(
    clients: pd.DataFrame, rule: str, who5_cutoff: float, phq9_cutoff: float
) -> tuple[np.ndarray, str]:
    who5 = clients["who5_baseline"].to_numpy(dtype=np.float64)
    phq9 = clients["phq9_baseline"].to_numpy(dtype=np.float64)
    by_who5 = who5 <= who5_cutoff
    by_phq9 = np.where(np.isnan(phq9), False, phq9 >= phq9_cutoff)
    if rule == "who5":
        return by_who5, f"WHO-5 baseline <= {who5_cutoff:g}"
    if rule == "phq9":
        return by_phq9, f"PHQ-9 baseline >= {phq9_cutoff:g}"
    return (
        np.where(np.isnan(phq9), by_who5, by_phq9),
        f"PHQ-9 baseline >= {phq9_cutoff:g}, else WHO-5 baseline <= {who5_cutoff:g}",
    )


def _sum_or_nan(values: pd.Series, by: pd.Series) -> pd.Series:
    """Group sums that are NaN when any term is NaN."""
    total = values.groupby(by).sum()
    has_nan = values.isna().groupby(by).any()
    return total.mask(has_nan)


def build_frame(
    study: RawStudy,
    *,
    elevated_by: str = "who5",
    who5_cutoff: float = 28,
    phq9_cutoff: float = 10,
    alliance_sessions: int = 0,
) -> AnalysisFrame:
    """Build the pseudonymised analysis frame from a validated study.

    Parameters
    ----------
    study : RawStudy
        A loaded (validated) study.
    elevated_by : {"who5", "phq9", "phq9_else_who5"}
        Rule for ``elevated``: ``"who5"`` — ``who5_baseline <= who5_cutoff``; ``"phq9"`` —
        ``phq9_baseline >= phq9_cutoff`` (missing PHQ-9 → False); ``"phq9_else_who5"`` — the
        PHQ-9 rule where ``phq9_baseline`` is present, else the WHO-5 rule.
    who5_cutoff : float
        WHO-5 cut-off (percentage metric); 28 is the "likely depression" screen.
    phq9_cutoff : float
        PHQ-9 cut-off; 10 is the usual threshold for moderate depression.
    alliance_sessions : int
        Average the ratings over each client's first ``alliance_sessions`` sessions only (early
        alliance); 0 uses every session. Membership weights count every session either way.

    Returns
    -------
    AnalysisFrame
        See the module docstring for the definitions.

    Raises
    ------
    ValueError
        For an unknown ``elevated_by``.
    """
    if elevated_by not in ELEVATED_RULES:
        raise ValueError(f"elevated_by must be one of {ELEVATED_RULES}, got {elevated_by!r}")
    raw_clients = study.clients
    raw_sessions = study.sessions
    provider_type = dict(
        zip(study.providers["provider_id"], study.providers["provider_type"], strict=True)
    )

    client_ids = sorted(raw_clients["client_id"].tolist())
    provider_ids = sorted(set(raw_sessions["provider_id"].tolist()))
    client_pos = {cid: i for i, cid in enumerate(client_ids)}
    provider_pos = {pid: i for i, pid in enumerate(provider_ids)}
    n_clients, n_providers = len(client_ids), len(provider_ids)

    # ---- sessions, in client then session order ---------------------------------------------
    ses = pd.DataFrame(
        {
            "client_index": raw_sessions["client_id"].map(client_pos).to_numpy(dtype=np.int64),
            "provider_index": raw_sessions["provider_id"]
            .map(provider_pos)
            .to_numpy(dtype=np.int64),
            "order": raw_sessions["session_index"].to_numpy(dtype=np.int64),
            "row": np.arange(len(raw_sessions), dtype=np.int64),
        }
    )
    for s in _ALL_SUBSCALES:
        ses[f"wai_{s}"] = raw_sessions[f"wai_{s}"].astype("Int64").array
    ses = ses.sort_values(["client_index", "order", "row"], kind="stable").reset_index(drop=True)
    ses["session_index"] = ses.groupby("client_index").cumcount().to_numpy(dtype=np.int64) + 1
    sessions = ses[
        ["client_index", "provider_index", "session_index", "wai_goal", "wai_bond", "wai_task"]
    ].copy()

    subscales = ("goal", "bond", "task") if sessions["wai_task"].notna().any() else ("goal", "bond")
    ratings = pd.DataFrame(
        {
            s: sessions[f"wai_{s}"].to_numpy(dtype=np.float64, na_value=np.nan)
            for s in _ALL_SUBSCALES
        }
    )
    ratings["client_index"] = sessions["client_index"]
    ratings["provider_index"] = sessions["provider_index"]

    # ---- client-provider pairs (memberships) --------------------------------------------------
    keys = ["client_index", "provider_index"]
    # Early alliance: ratings of the first k sessions only; the weights still count every session.
    rated = ratings
    if alliance_sessions:
        rated = ratings[sessions["session_index"].to_numpy() <= alliance_sessions]
    cp = ratings.groupby(keys, sort=True).size().rename("n_sessions").to_frame()
    cp = cp.join(rated.groupby(keys, sort=True)[list(_ALL_SUBSCALES)].mean())
    cp = cp.reset_index()
    cp["composite"] = cp[["goal", "bond"]].mean(axis=1)
    client_sessions = cp.groupby("client_index")["n_sessions"].transform("sum")
    cp["weight"] = cp["n_sessions"] / client_sessions
    memberships = cp[["client_index", "provider_index", "n_sessions", "weight"]].astype(
        {
            "client_index": np.int64,
            "provider_index": np.int64,
            "n_sessions": np.int64,
            "weight": np.float64,
        }
    )

    # ---- client alliance and its within/between split -----------------------------------------
    per_client = rated.groupby("client_index")[list(_ALL_SUBSCALES)].mean()
    per_client = per_client.reindex(range(n_clients))
    alliance = {s: per_client[s] for s in _ALL_SUBSCALES}
    alliance["composite"] = per_client[["goal", "bond"]].mean(axis=1)

    provider_means: dict[str, pd.Series] = {}
    between: dict[str, pd.Series] = {}
    for s in (*subscales, "composite"):
        m = cp.groupby("provider_index")[s].mean().reindex(range(n_providers))
        provider_means[s] = m
        contrib = cp["weight"] * cp["provider_index"].map(m)
        between[s] = _sum_or_nan(contrib, cp["client_index"]).reindex(range(n_clients))

    # ---- care type ----------------------------------------------------------------------------
    ptypes = np.array([provider_type[pid] for pid in provider_ids], dtype=object)
    cp_type = pd.Series(ptypes[cp["provider_index"].to_numpy()])
    saw_t = cp_type.eq("therapist").groupby(cp["client_index"]).any().reindex(range(n_clients))
    saw_c = cp_type.eq("coach").groupby(cp["client_index"]).any().reindex(range(n_clients))
    care = np.where(saw_t & saw_c, "both", np.where(saw_t, "therapist", "coach"))

    # ---- clients table ------------------------------------------------------------------------
    raw = raw_clients.set_index("client_id").loc[client_ids].reset_index(drop=True)
    sex = raw["sex"].astype("str")
    elevated, rule_text = _elevated(raw, elevated_by, who5_cutoff, phq9_cutoff)
    n_sess = cp.groupby("client_index")["n_sessions"].sum().reindex(range(n_clients))
    n_prov = cp.groupby("client_index").size().reindex(range(n_clients))
    clients = pd.DataFrame(
        {
            "client": [f"C{i + 1:05d}" for i in range(n_clients)],
            "care_type": pd.Categorical(care, categories=list(CARE_TYPES)),
            "n_sessions": n_sess.to_numpy(dtype=np.int64),
            "n_providers": n_prov.to_numpy(dtype=np.int64),
            "age": raw["age"].to_numpy(dtype=np.float64),
            "sex": sex,
            # "male vs not male", as the paper codes it: "other" is not male; an empty sex is
            # unknown (missing), so models with the covariate leave such clients out and say so.
            "male": sex.map({"male": 1.0, "female": 0.0, "other": 0.0}).astype("float64"),
            "country": raw["country"].astype("str"),
            "days_in_care": raw["days_in_care"].to_numpy(dtype=np.float64, na_value=np.nan),
        }
    )
    for measure in ("who5", "phq9"):
        base = raw[f"{measure}_baseline"].to_numpy(dtype=np.float64)
        follow = raw[f"{measure}_followup"].to_numpy(dtype=np.float64)
        clients[f"{measure}_baseline"] = base
        clients[f"{measure}_followup"] = follow
        clients[f"{measure}_change"] = follow - base
    clients["elevated"] = np.asarray(elevated, dtype=bool)
    for s in _ALL_SUBSCALES:
        clients[f"alliance_{s}"] = alliance[s].to_numpy(dtype=np.float64)
    clients["alliance"] = alliance["composite"].to_numpy(dtype=np.float64)
    for s in subscales:
        b = between[s].to_numpy(dtype=np.float64)
        clients[f"alliance_{s}_between"] = b
        clients[f"alliance_{s}_within"] = alliance[s].to_numpy(dtype=np.float64) - b
    b = between["composite"].to_numpy(dtype=np.float64)
    clients["alliance_between"] = b
    clients["alliance_within"] = clients["alliance"].to_numpy() - b

    # ---- providers table ----------------------------------------------------------------------
    pcounts = (
        cp.groupby("provider_index")
        .agg(n_clients=("client_index", "size"), n_sessions=("n_sessions", "sum"))
        .reindex(range(n_providers))
    )
    providers = pd.DataFrame(
        {
            "provider": [f"P{i + 1:04d}" for i in range(n_providers)],
            "provider_type": pd.Categorical(list(ptypes), categories=list(PROVIDER_TYPES)),
            "n_clients": pcounts["n_clients"].to_numpy(dtype=np.int64),
            "n_sessions": pcounts["n_sessions"].to_numpy(dtype=np.int64),
        }
    )
    for s in subscales:
        providers[f"alliance_{s}_mean"] = provider_means[s].to_numpy(dtype=np.float64)
    providers["alliance_mean"] = provider_means["composite"].to_numpy(dtype=np.float64)

    return AnalysisFrame(
        clients=clients,
        providers=providers,
        memberships=memberships.reset_index(drop=True),
        sessions=sessions.reset_index(drop=True),
        subscales=subscales,
        data_sha256=study.sha256,
        elevated_rule=rule_text,
    )
