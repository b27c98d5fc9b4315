r"""The analysis frame: one row per client, pseudonymised, with everything the models consume.

:func:`build_frame` turns a validated :class:`~alliance_bayes.data.load.RawStudy` into an
:class:`AnalysisFrame`. Everything here is derived, never supplied by the user.

Definitions
-----------
Let client :math:`i` have :math:`n_{ip}` sessions with provider :math:`p` and
:math:`n_i = \sum_p n_{ip}` sessions in all; the exposure weight :math:`n_{ip} / n_i` (each
provider's share of the client's sessions) is what :attr:`AnalysisFrame.memberships` holds and the
provider effects of a multiple-membership model use.

The alliance of subscale :math:`s` (goal, bond, and task when measured) is built from the set
:math:`S_{is}` of the client's sessions that *enter the score*: the sessions where item :math:`s`
was rated, and with ``alliance_sessions = k > 0`` (early alliance) only those among the client's
first :math:`k` sessions. Let :math:`n_{ips}` count the sessions of :math:`S_{is}` with provider
:math:`p` and :math:`n_{is} = \sum_p n_{ips}` (recorded as ``alliance_{s}_n_sessions``). Then

* client alliance :math:`a_{is}` — mean of the ratings over :math:`S_{is}`;
* client–provider alliance :math:`a_{ips}` — the same mean over the sessions of :math:`S_{is}`
  with :math:`p` only;
* part weight :math:`w_{ips} = n_{ips} / n_{is}` (:math:`\sum_p w_{ips} = 1`), so that
  :math:`a_{is} = \sum_p w_{ips}\, a_{ips}` exactly;
* provider (caseload) mean :math:`m_{ps} = \operatorname{mean}_{i \in C_{ps}} a_{ips}`, over the
  clients :math:`C_{ps}` with at least one session of :math:`S_{is}` with :math:`p`, each client
  weighted equally;
* between-provider alliance :math:`b_{is} = \sum_p w_{ips}\, m_{ps}` (the client's
  multiple-membership caseload mean);
* within-provider alliance :math:`v_{is} = a_{is} - b_{is} = \sum_p w_{ips}\,(a_{ips} - m_{ps})`.

Because the weights, the caseload means and the score all come from the same sessions, the within
part is a weighted sum of deviations :math:`a_{ips} - m_{ps}`, each of which has mean zero over
the caseload of :math:`p`: no between-provider difference is left in it. Weights
:math:`\tilde w_{ip}` counted over other sessions (all of them, while the score uses the first
:math:`k`, or only those where the task item was rated) would give
:math:`a_{is} - \sum_p \tilde w_{ip} m_{ps} = \sum_p w_{ips}(a_{ips} - m_{ps})
+ \sum_p (w_{ips} - \tilde w_{ip})\, m_{ps}`: provider means leaking into the within part. A
provider seen only after the first :math:`k` sessions, or never rated on :math:`s`, has weight 0
in the split. A client with no session in :math:`S_{is}` has no score and no parts (NaN).

With ``alliance_sessions = k`` the early alliance of a client with at most :math:`k` sessions is
their all-session alliance: the window only changes the score of clients with more than
:math:`k` sessions (``alliance_n_sessions < n_sessions``).

The composite alliance (the paper's score) is :math:`a_i = (a_{i,\mathrm{goal}} +
a_{i,\mathrm{bond}})/2`, with between and within parts :math:`b_i = (b_{i,\mathrm{goal}} +
b_{i,\mathrm{bond}})/2` and :math:`v_i = (v_{i,\mathrm{goal}} + v_{i,\mathrm{bond}})/2`, and the
composite provider mean :math:`(m_{p,\mathrm{goal}} + m_{p,\mathrm{bond}})/2`; where only one of
the two items is available each of these is that item's. When goal and bond are rated at the same
sessions (as in the shipped study) :math:`b_i = \sum_p w_{ip}\,(m_{p,\mathrm{goal}} +
m_{p,\mathrm{bond}})/2`, one set of weights for both items; ``alliance_n_sessions`` counts the
sessions with at least one of the two items rated.

A study that declares its alliance instrument (:mod:`alliance_bayes.data.alliance`) has, per
session and subscale, several items, or one pre-scored mean: the session's rating of subscale
:math:`s` is then the mean of the subscale's *rated* items at that session (negatively worded
items reversed first, :math:`\text{low} + \text{high} - r`), or the pre-scored mean, on the
declared scale; a session where none of them is rated has no rating of :math:`s`. A session where
some but not all of a subscale's items are rated keeps the mean of those rated, and is counted
(:attr:`AnalysisFrame.partially_rated`, recorded in ``run.json``). Everything above then holds
with these session scores for the ratings.

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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from alliance_bayes.data.alliance import AllianceInstrument
from alliance_bayes.data.care import CARE_REFERENCE, CARE_TYPES, PROVIDER_TYPES, contrast
from alliance_bayes.data.covariates import Covariate
from alliance_bayes.data.instruments import Instrument
from alliance_bayes.data.load import Conversion, RawStudy
from alliance_bayes.errors import DataContractError, DesignError

__all__ = [
    "CARE_TYPES",
    "ELEVATED_RULES",
    "PROVIDER_TYPES",
    "AnalysisFrame",
    "build_frame",
    "elevated_at_baseline",
]

ELEVATED_RULES: tuple[str, ...] = ("who5", "phq9", "phq9_else_who5")
_ALL_SUBSCALES: tuple[str, ...] = ("goal", "bond", "task")


@dataclass(frozen=True, eq=False, repr=False)
class AnalysisFrame:
    """The pseudonymised analysis frame that the model layer consumes.

    Attributes
    ----------
    clients : pandas.DataFrame
        One row per client, RangeIndex ``0..n-1`` in pseudonym order. Columns: ``client``,
        ``care_type`` (Categorical: :attr:`care_types`), ``n_sessions``, ``n_providers``,
        ``age``, ``sex``, ``male`` (1.0 male, 0.0 female or other, NaN when sex is empty), ``country``,
        ``days_in_care``, ``who5_baseline``, ``who5_followup``, ``who5_change``,
        ``phq9_baseline``, ``phq9_followup``, ``phq9_change``, ``elevated``, ``alliance_goal``,
        ``alliance_bond``, ``alliance_task``, ``alliance`` (composite), and for each subscale in
        :attr:`subscales` ``alliance_{s}_between`` / ``alliance_{s}_within`` and
        ``alliance_{s}_n_sessions`` (sessions behind the score), plus ``alliance_between`` /
        ``alliance_within`` / ``alliance_n_sessions`` for the composite (see the module
        docstring); and ``<name>_baseline``, ``<name>_followup``, ``<name>_change`` for each
        declared outcome instrument in :attr:`outcomes`; and a column per declared covariate in
        :attr:`covariates`, named like it (``float64`` for a numeric or 0/1 one, text levels for
        a categorical or text-coded binary one; missing stays missing).
    providers : pandas.DataFrame
        One row per provider with at least one session, RangeIndex. Columns: ``provider``,
        ``provider_type`` (Categorical: :attr:`provider_types`), ``n_clients``, ``n_sessions``,
        ``alliance_{s}_mean`` for each subscale and ``alliance_mean`` (composite); the means are
        the client-weighted caseload means :math:`m_{ps}` of the module docstring.
    memberships : pandas.DataFrame
        One row per client–provider pair, sorted by client then provider: ``client_index``,
        ``provider_index`` (row positions in :attr:`clients` / :attr:`providers`), ``n_sessions``
        and ``weight`` (share of all the client's sessions, the exposure weight; sums to 1 per
        client). The within/between split uses :meth:`alliance_weights` instead.
    sessions : pandas.DataFrame
        One row per session, sorted by client then session: ``client_index``,
        ``provider_index``, ``session_index`` (1, 2, … within the client, in the order of the
        given ``session_index``, else of ``session_date``, ties in file order), ``wai_goal``,
        ``wai_bond``, ``wai_task``: the session's rating of each subscale (nullable ``Int64``), or
        with a declared alliance instrument its score, the mean of the subscale's rated items
        (``float64``; ``Int64`` still for one integer 1–5 item per subscale); with several
        items per subscale also each item's rating as recorded (not reversed, ``float64``),
        under its declared column name.
    subscales : tuple of str
        ``("goal", "bond")``, plus ``"task"`` when any task rating is present.
    data_sha256 : str
        The study's :attr:`RawStudy.sha256`.
    elevated_rule : str
        The rule behind ``clients["elevated"]``, in words.
    alliance_sessions : int
        The early-alliance window: scores over each client's first ``alliance_sessions`` sessions;
        0 for every session.
    outcomes : dict of str to Instrument
        The outcome instruments the study declares (:attr:`RawStudy.outcomes`).
    outcomes_declared_in : str
        Where they are declared (the study's ``study.toml``), for messages; ``""`` when nowhere.
    covariates : dict of str to Covariate
        The client covariates the study declares (:attr:`RawStudy.covariates`).
    alliance : AllianceInstrument or None
        The alliance instrument the study declares (:attr:`RawStudy.alliance`); ``None`` for the
        contract's one 1–5 item per subscale.
    partially_rated : dict of str to int
        With a declared instrument of several items per subscale: per subscale, the sessions
        where some but not all of its items were rated (their score is the mean of those rated).
    conversions : tuple of Conversion
        What the loader converted or noted (:attr:`RawStudy.conversions`: value labels and
        declared missing codes of Stata or SPSS cells, ``NA`` cells of CSV files, skipped empty
        unnamed columns, declared provider types without providers), listed by :meth:`summary`
        and recorded in ``run.json`` for the report's Clients section.
    provider_types : tuple of str
        The study's provider types (:attr:`RawStudy.care`: therapist, coach unless declared) that
        some provider with sessions has, in their order; a type without providers is no level.
    care_types : tuple of str
        The care types, the combinations of provider types a client saw
        (:meth:`~alliance_bayes.data.care.CareTypes.levels`), those among the study's clients:
        therapist, coach, both under the contract's types when every one has clients.
    care_reference : str
        The care type that care-type contrasts are against (:mod:`alliance_bayes.data.care`).
    levels_without_clients : dict of str to list of str
        After :meth:`select` with ``narrow=True``: the study's care types (``"care_types"``) and
        provider types (``"provider_types"``) that no selected client or provider has, and, where
        the reference care type was one of them, the study's reference (``"care_reference"``);
        empty when the selection kept every level.
    """

    clients: pd.DataFrame
    providers: pd.DataFrame
    memberships: pd.DataFrame
    sessions: pd.DataFrame
    subscales: tuple[str, ...]
    data_sha256: str
    elevated_rule: str = ""
    alliance_sessions: int = 0
    outcomes: dict[str, Instrument] = dataclasses.field(default_factory=dict)
    outcomes_declared_in: str = ""
    covariates: dict[str, Covariate] = dataclasses.field(default_factory=dict)
    alliance: AllianceInstrument | None = None
    partially_rated: dict[str, int] = dataclasses.field(default_factory=dict)
    conversions: tuple[Conversion, ...] = ()
    provider_types: tuple[str, ...] = PROVIDER_TYPES
    care_types: tuple[str, ...] = CARE_TYPES
    care_reference: str = CARE_REFERENCE
    levels_without_clients: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    @property
    def provider_reference(self) -> str:
        """The reference provider type of a family's provider-type shifts (ratings, latent): the
        reference care type when that is a single provider type (coach under the contract's
        types), so that the reference care group's providers carry no shift; else the first
        declared provider type."""
        ref = self.care_reference
        return ref if ref in self.provider_types else self.provider_types[0]

    @property
    def provider_contrasts(self) -> tuple[str, ...]:
        """``"<type>-<reference type>"`` for every provider type but :attr:`provider_reference`."""
        ref = self.provider_reference
        return tuple(contrast(t, ref) for t in self.provider_types if t != ref)

    def provider_type_design(self) -> np.ndarray:
        r"""(provider, provider contrast) indicators of the non-reference provider types, centred.

        Column :math:`t` is :math:`[t(p) = t] - \pi_t`, with :math:`\pi_t` type :math:`t`'s share
        of the providers: a shift per type then leaves the overall location to the cut-points
        (uncentred, the therapist shift was the slowest direction of the latent model's sampler),
        and a provider of type :math:`t` is shifted by :math:`\delta_t - \sum_{t'}
        \pi_{t'}\delta_{t'}` (:math:`\delta_{t_0} = 0`, :attr:`provider_reference`). Columns in
        the order of :attr:`provider_contrasts`.
        """
        kind = self.providers["provider_type"].astype(str).to_numpy()
        other = [t for t in self.provider_types if t != self.provider_reference]
        onehot = kind[:, None] == np.array(other, dtype=object)[None, :]
        return onehot - np.mean(onehot, axis=0)

    @property
    def care_contrasts(self) -> tuple[str, ...]:
        """The care-type contrasts, ``"<care type>-<reference>"`` (``therapist-coach``)."""
        return tuple(
            contrast(c, self.care_reference) for c in self.care_types if c != self.care_reference
        )

    @property
    def alliance_scale(self) -> str:
        """The scale of the alliance scores in words: ``"1–5"``, or ``"WAI-S 1–7"``."""
        return "1–5" if self.alliance is None else self.alliance.scale

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
    def alliance_weights(self, subscale: str) -> pd.DataFrame:
        r"""The part weights :math:`w_{ips}` behind a subscale's within/between split.

        Parameters
        ----------
        subscale : {"goal", "bond", "task"}

        Returns
        -------
        pandas.DataFrame
            One row per client–provider pair with at least one session that enters the client's
            score (item rated, within the early-alliance window): ``client_index``,
            ``provider_index``, ``n_sessions`` (:math:`n_{ips}`), ``weight``
            (:math:`w_{ips} = n_{ips} / n_{is}`, summing to 1 per client) and ``mean``
            (:math:`a_{ips}`). With :attr:`providers`' ``alliance_{s}_mean`` as :math:`m_{ps}`,
            :math:`\sum_p w_{ips} m_{ps}` is ``alliance_{s}_between``.
        """
        if subscale not in _ALL_SUBSCALES:
            raise ValueError(f"subscale must be one of {_ALL_SUBSCALES}, got {subscale!r}")
        return _part_pairs(self.sessions, subscale, self.alliance_sessions)

    # ----------------------------------------------------------------------------------------------
    def select(
        self, mask: np.ndarray | pd.Series | list[bool], *, narrow: bool = False
    ) -> AnalysisFrame:
        """Keep the clients where ``mask`` is true.

        Parameters
        ----------
        mask : array-like of bool, length n_clients
            Aligned with :attr:`clients` (a Series must carry the same index).
        narrow : bool
            Also drop the care and provider types that no kept client or provider has (a model
            of the selection estimates nothing for them: their effects would be their priors),
            and, where the reference care type is one of them, take the largest kept care group
            as the reference; what was dropped is :attr:`levels_without_clients`. A model's
            sample is selected this way; subsets of a fitted model's clients (cross-validation
            folds) keep its levels.

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
        selected = dataclasses.replace(
            self,
            clients=self.clients[keep].reset_index(drop=True),
            providers=providers,
            memberships=mem,
            sessions=sessions,
        )
        return selected._narrowed() if narrow else selected

    def _narrowed(self) -> AnalysisFrame:
        """This frame with only the care and provider types its clients and providers have."""
        care_counts = self.clients["care_type"].astype(str).value_counts()
        care_types = tuple(c for c in self.care_types if care_counts.get(c, 0))
        kinds = set(self.providers["provider_type"].astype(str))
        provider_types = tuple(t for t in self.provider_types if t in kinds)
        dropped: dict[str, list[str]] = {}
        if len(care_types) < len(self.care_types):
            dropped["care_types"] = [c for c in self.care_types if c not in care_types]
        if len(provider_types) < len(self.provider_types):
            dropped["provider_types"] = [t for t in self.provider_types if t not in kinds]
        if not dropped:
            return self
        reference = self.care_reference
        if reference not in care_types:
            dropped["care_reference"] = [reference]
            reference = max(care_types, key=lambda c: care_counts[c])  # the first among equals
        clients = self.clients.assign(
            care_type=pd.Categorical(self.clients["care_type"].astype(str), categories=care_types)
        )
        providers = self.providers.assign(
            provider_type=pd.Categorical(
                self.providers["provider_type"].astype(str), categories=provider_types
            )
        )
        return dataclasses.replace(
            self,
            clients=clients,
            providers=providers,
            care_types=care_types,
            provider_types=provider_types,
            care_reference=reference,
            levels_without_clients={
                key: [*self.levels_without_clients.get(key, []), *dropped.get(key, [])]
                for key in (*self.levels_without_clients, *dropped)
            },
        )

    # ----------------------------------------------------------------------------------------------
    def summary(self) -> str:
        """A readable multi-line summary of the frame (for the command line)."""
        c, p = self.clients, self.providers
        care = c["care_type"].value_counts().reindex(self.care_types, fill_value=0)
        ptype = p["provider_type"].value_counts().reindex(self.provider_types, fill_value=0)
        followup = c["who5_followup"].notna()
        elevated = c["elevated"].astype(bool)
        per_client = c["n_sessions"]
        lines = [
            f"Analysis frame (data sha256 {self.data_sha256[:12]})",
            f"  clients:   {len(c)} ("
            + ", ".join(f"{k} {int(care[k])}" for k in self.care_types)
            + ")",
            f"  providers: {len(p)} ("
            + ", ".join(f"{k} {int(ptype[k])}" for k in self.provider_types)
            + ")",
            f"  sessions:  {len(self.sessions)} (per client median {_fmt(per_client.median())}, "
            f"range {_fmt(per_client.min())}–{_fmt(per_client.max())})",
            f"  subscales: {', '.join(self.subscales)}",
            f"  alliance (composite, {self.alliance_scale}): "
            f"median {_fmt(c['alliance'].median(), 2)}, "
            f"mean {_fmt(c['alliance'].mean(), 2)}",
            f"  WHO-5 follow-up observed: {int(followup.sum())} of {len(c)}"
            if c["who5_baseline"].notna().any()
            else "  WHO-5: not measured",
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
        # what reading changed or noted (missing codes, labels, a skipped empty column, a
        # declared provider type without providers), as the report's Clients section lists it
        lines += [f"  read: {c}" for c in self.conversions]
        return "\n".join(lines)


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------------
def elevated_at_baseline(
    clients: pd.DataFrame,
    rule: str,
    *,
    who5_cutoff: float = 28,
    phq9_cutoff: float = 10,
    outcomes: Mapping[str, Instrument] | None = None,
) -> tuple[np.ndarray, str]:
    """Which clients are elevated at baseline under ``rule``, and the rule in words.

    The built-in rules (:data:`ELEVATED_RULES`): ``"who5"``, ``who5_baseline <= who5_cutoff``;
    ``"phq9"``, ``phq9_baseline >= phq9_cutoff``; ``"phq9_else_who5"``, the PHQ-9 rule where a
    PHQ-9 baseline exists, else the WHO-5 one. Any other rule names an outcome the study declares
    (``outcomes``, ``[outcomes.<name>]``): its baseline at or beyond its declared ``cutoff`` on the
    worse side, ``>=`` where lower is better, ``<=`` where higher is. A client without the
    baseline score (or a study without the column) is not elevated.

    Raises
    ------
    DesignError
        ``rule`` is neither built in nor an outcome in ``outcomes``, or that outcome declares no
        ``cutoff``.
    """

    def baseline(column: str) -> np.ndarray:
        if column not in clients:
            return np.full(len(clients), np.nan)
        return clients[column].to_numpy(dtype=np.float64, na_value=np.nan)

    if rule in ELEVATED_RULES:
        who5, phq9 = baseline("who5_baseline"), baseline("phq9_baseline")
        by_who5, by_phq9 = who5 <= who5_cutoff, phq9 >= phq9_cutoff  # NaN compares False
        if rule == "who5":
            return by_who5, f"WHO-5 baseline <= {who5_cutoff:g}"
        if rule == "phq9":
            return by_phq9, f"PHQ-9 baseline >= {phq9_cutoff:g}"
        return (
            np.where(np.isnan(phq9), by_who5, by_phq9),
            f"PHQ-9 baseline >= {phq9_cutoff:g}, else WHO-5 baseline <= {who5_cutoff:g}",
        )
    declared = dict(outcomes or {})
    instrument = declared.get(rule)
    if instrument is None:
        raise DesignError(
            f"elevated_by = {rule!r}: neither a built-in rule ({', '.join(map(repr, ELEVATED_RULES))})"
            " nor an outcome the study declares"
            + (f" ({', '.join(map(repr, declared))})" if declared else " (it declares none)")
        )
    if instrument.cutoff is None:
        raise DesignError(
            f"elevated_by = {rule!r}: [outcomes.{rule}] ({instrument.label}) declares no cutoff; "
            "add cutoff = <score> to it"
        )
    worse = ">=" if instrument.better == "lower" else "<="
    base = baseline(instrument.baseline)
    flag = base >= instrument.cutoff if worse == ">=" else base <= instrument.cutoff
    return flag, f"{instrument.label} baseline {worse} {instrument.cutoff:g}"


_KEYS = ["client_index", "provider_index"]


def _used_sessions(sessions: pd.DataFrame, items: tuple[str, ...], window: int) -> np.ndarray:
    """Sessions that enter the score: any of ``items`` rated, within the first ``window``."""
    rated = sessions[[f"wai_{s}" for s in items]].notna().any(axis=1).to_numpy()
    if window:
        rated = rated & (sessions["session_index"].to_numpy() <= window)
    return rated


def _part_pairs(sessions: pd.DataFrame, subscale: str, window: int) -> pd.DataFrame:
    """Client–provider pairs of the sessions behind a subscale score: n, weight and mean."""
    used = sessions[_used_sessions(sessions, (subscale,), window)]
    ratings = used[f"wai_{subscale}"].to_numpy(dtype=np.float64, na_value=np.nan)
    pairs = (
        pd.Series(ratings, index=pd.MultiIndex.from_frame(used[_KEYS]))
        .groupby(level=_KEYS, sort=True)
        .agg(["size", "mean"])
        .rename(columns={"size": "n_sessions"})
        .reset_index()
    )
    pairs["weight"] = pairs["n_sessions"] / pairs.groupby("client_index")["n_sessions"].transform(
        "sum"
    )
    return pairs[["client_index", "provider_index", "n_sessions", "weight", "mean"]].astype(
        {"client_index": np.int64, "provider_index": np.int64, "n_sessions": np.int64}
    )


@dataclass(frozen=True)
class _Split:
    """One subscale's score, caseload means and between part, all from the same sessions."""

    score: pd.Series  # a_is, per client (NaN without a session behind it)
    n_sessions: pd.Series  # n_is
    provider_mean: pd.Series  # m_ps, per provider
    between: pd.Series  # b_is = sum_p w_ips m_ps


def _split(
    sessions: pd.DataFrame, subscale: str, window: int, n_clients: int, n_providers: int
) -> _Split:
    """Split one subscale: score, sessions used, caseload means and between part (NaN-free
    exactly where the client has a session behind the score)."""
    clients, providers = pd.RangeIndex(n_clients), pd.RangeIndex(n_providers)
    used = sessions[_used_sessions(sessions, (subscale,), window)]
    ratings = used[f"wai_{subscale}"].to_numpy(dtype=np.float64, na_value=np.nan)
    score = pd.Series(ratings).groupby(used["client_index"].to_numpy()).mean().reindex(clients)
    pairs = _part_pairs(sessions, subscale, window)
    n_used = pairs.groupby("client_index")["n_sessions"].sum().reindex(clients, fill_value=0)
    m = pairs.groupby("provider_index")["mean"].mean().reindex(providers)
    between = (
        (pairs["weight"] * m.to_numpy()[pairs["provider_index"].to_numpy()])
        .groupby(pairs["client_index"])
        .sum()
        .reindex(clients)
    )
    return _Split(score=score, n_sessions=n_used, provider_mean=m, between=between)


def _alliance_columns(
    sessions: pd.DataFrame,
    subscales: tuple[str, ...],
    window: int,
    n_clients: int,
    n_providers: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Client and provider alliance columns: scores, within/between parts, caseload means.

    Each subscale is split on its own sessions (:func:`_split`); the composite's parts are the
    means of the goal and bond parts, so that they too add up to the composite score.
    """
    splits = {s: _split(sessions, s, window, n_clients, n_providers) for s in _ALL_SUBSCALES}
    items = [splits["goal"], splits["bond"]]

    def item_mean(field: str) -> np.ndarray:
        stacked = pd.concat([getattr(x, field) for x in items], axis=1)
        return stacked.mean(axis=1).to_numpy(dtype=np.float64)

    clients: dict[str, np.ndarray] = {
        f"alliance_{s}": splits[s].score.to_numpy(dtype=np.float64) for s in _ALL_SUBSCALES
    }
    clients["alliance"] = item_mean("score")
    for s in subscales:
        between = splits[s].between.to_numpy(dtype=np.float64)
        clients[f"alliance_{s}_between"] = between
        clients[f"alliance_{s}_within"] = clients[f"alliance_{s}"] - between
        clients[f"alliance_{s}_n_sessions"] = splits[s].n_sessions.to_numpy(dtype=np.int64)
    clients["alliance_between"] = item_mean("between")
    clients["alliance_within"] = clients["alliance"] - clients["alliance_between"]
    used = _used_sessions(sessions, ("goal", "bond"), window)
    clients["alliance_n_sessions"] = np.bincount(
        sessions["client_index"].to_numpy()[used], minlength=n_clients
    ).astype(np.int64)

    providers = {
        f"alliance_{s}_mean": splits[s].provider_mean.to_numpy(dtype=np.float64) for s in subscales
    }
    providers["alliance_mean"] = item_mean("provider_mean")
    return clients, providers


def session_scores(
    sessions: pd.DataFrame, alliance: AllianceInstrument
) -> tuple[dict[str, pd.Series], dict[str, int]]:
    """Each session's score of each subscale under a declared alliance instrument.

    The score is the mean of the subscale's rated items (a negatively worded item reversed
    first, ``low + high - rating``), or the pre-scored mean; missing where none is rated, and
    for a subscale the instrument does not measure. Returns the scores (one Series per subscale of
    goal, bond and task, aligned with ``sessions``: ``Int64`` when the instrument is one integer
    1–5 item per subscale, ``float64`` otherwise) and, per measured subscale of several items, the
    sessions where some but not all of them were rated.
    """
    scores: dict[str, pd.Series] = {}
    partial: dict[str, int] = {}
    for s in _ALL_SUBSCALES:
        items = alliance.items(s)
        if not items:
            scores[s] = pd.Series(np.nan, index=sessions.index, dtype="float64")
            continue
        ratings = sessions[list(items)].astype("float64")
        for column in alliance.reverse:
            if column in ratings:
                ratings[column] = alliance.low + alliance.high - ratings[column]
        rated = ratings.notna().sum(axis=1)
        scores[s] = ratings.mean(axis=1, skipna=True).where(rated > 0)
        if len(items) > 1:
            partial[s] = int(((rated > 0) & (rated < len(items))).sum())
    if alliance.single_ratings_1_to_5:
        scores = {s: v.round().astype("Int64") for s, v in scores.items()}
    return scores, partial


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
    elevated_by : str
        Rule for ``elevated`` (:func:`elevated_at_baseline`): ``"who5"`` — ``who5_baseline <=
        who5_cutoff``; ``"phq9"`` — ``phq9_baseline >= phq9_cutoff`` (missing PHQ-9 → False);
        ``"phq9_else_who5"`` — the PHQ-9 rule where ``phq9_baseline`` is present, else the WHO-5
        rule; or the name of an outcome the study declares with a ``cutoff``.
    who5_cutoff : float
        WHO-5 cut-off (percentage metric); 28 is the "likely depression" screen.
    phq9_cutoff : float
        PHQ-9 cut-off; 10 is the usual threshold for moderate depression.
    alliance_sessions : int
        Average the ratings over each client's first ``alliance_sessions`` sessions only (early
        alliance); 0 uses every session. The within/between split then uses the same sessions
        (part weights and caseload means); the exposure weights of :attr:`AnalysisFrame.memberships`
        count every session either way.

    Returns
    -------
    AnalysisFrame
        See the module docstring for the definitions.

    Raises
    ------
    DesignError
        An ``elevated_by`` neither built in nor a declared outcome with a cut-off.
    """
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
    partially_rated: dict[str, int] = {}
    item_columns: list[str] = []
    if study.alliance is None:
        for s in _ALL_SUBSCALES:
            ses[f"wai_{s}"] = raw_sessions[f"wai_{s}"].astype("Int64").array
    else:
        scores, partially_rated = session_scores(raw_sessions, study.alliance)
        for s in _ALL_SUBSCALES:
            ses[f"wai_{s}"] = scores[s].array
        # several items per subscale: the item ratings as recorded (not reversed), for the
        # models of every item rating (the ratings family)
        if any(len(items) > 1 for _, items in study.alliance.subscales):
            item_columns = [c for c in study.alliance.columns if c not in ses]
            for c in item_columns:
                ses[c] = raw_sessions[c].astype("float64").to_numpy()
    ses = ses.sort_values(["client_index", "order", "row"], kind="stable").reset_index(drop=True)
    ses["session_index"] = ses.groupby("client_index").cumcount().to_numpy(dtype=np.int64) + 1
    sessions = ses[
        [
            "client_index",
            "provider_index",
            "session_index",
            "wai_goal",
            "wai_bond",
            "wai_task",
            *item_columns,
        ]
    ].copy()

    subscales = ("goal", "bond", "task") if sessions["wai_task"].notna().any() else ("goal", "bond")

    # ---- client-provider pairs (memberships): exposure, every session counts ------------------
    cp = sessions.groupby(_KEYS, sort=True).size().rename("n_sessions").reset_index()
    cp["weight"] = cp["n_sessions"] / cp.groupby("client_index")["n_sessions"].transform("sum")
    memberships = cp.astype(
        {
            "client_index": np.int64,
            "provider_index": np.int64,
            "n_sessions": np.int64,
            "weight": np.float64,
        }
    )

    # ---- client alliance and its within/between split -----------------------------------------
    client_alliance, provider_alliance = _alliance_columns(
        sessions, subscales, alliance_sessions, n_clients, n_providers
    )

    # ---- care type ----------------------------------------------------------------------------
    ptypes = np.array([provider_type[pid] for pid in provider_ids], dtype=object)
    seen = (
        pd.Series(ptypes[cp["provider_index"].to_numpy()])
        .groupby(cp["client_index"].to_numpy())
        .agg(frozenset)
        .reindex(range(n_clients))
    )
    names = {kinds: study.care.name(kinds) for kinds in set(seen)}
    care = seen.map(names).to_numpy(dtype=object)
    care_types = study.care.levels(names.values())
    provider_types = study.care.present(ptypes)
    counts = pd.Series(care).value_counts()
    care_reference = study.care.choose_reference({c: int(counts.get(c, 0)) for c in care_types})
    if not counts.get(care_reference, 0):  # contrasts against an empty group: a ridge with alpha
        present = [c for c in care_types if counts.get(c, 0)]
        raise DataContractError(
            study.settings or "care_reference",
            f"a reference care type that some client has ({', '.join(present)}), got "
            f"{care_reference!r}",
            csv=False,
        )

    # ---- clients table ------------------------------------------------------------------------
    raw = raw_clients.set_index("client_id").loc[client_ids].reset_index(drop=True)
    sex = raw["sex"].astype("str")
    elevated, rule_text = elevated_at_baseline(
        raw,
        elevated_by,
        who5_cutoff=who5_cutoff,
        phq9_cutoff=phq9_cutoff,
        outcomes=study.outcomes,
    )
    n_sess = cp.groupby("client_index")["n_sessions"].sum().reindex(range(n_clients))
    n_prov = cp.groupby("client_index").size().reindex(range(n_clients))
    clients = pd.DataFrame(
        {
            "client": [f"C{i + 1:05d}" for i in range(n_clients)],
            "care_type": pd.Categorical(care, categories=list(care_types)),
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
    for instrument in study.outcomes.values():
        base = raw[instrument.baseline].to_numpy(dtype=np.float64)
        follow = raw[instrument.followup].to_numpy(dtype=np.float64)
        clients[instrument.baseline] = base
        clients[instrument.followup] = follow
        clients[f"{instrument.name}_change"] = follow - base
    for name, covariate in study.covariates.items():
        values = raw[name]
        clients[name] = (
            values.astype("str") if covariate.coded else values.to_numpy(dtype=np.float64)
        )
    clients["elevated"] = np.asarray(elevated, dtype=bool)
    for name, values in client_alliance.items():
        clients[name] = values

    # ---- providers table ----------------------------------------------------------------------
    pcounts = (
        cp.groupby("provider_index")
        .agg(n_clients=("client_index", "size"), n_sessions=("n_sessions", "sum"))
        .reindex(range(n_providers))
    )
    providers = pd.DataFrame(
        {
            "provider": [f"P{i + 1:04d}" for i in range(n_providers)],
            "provider_type": pd.Categorical(list(ptypes), categories=list(provider_types)),
            "n_clients": pcounts["n_clients"].to_numpy(dtype=np.int64),
            "n_sessions": pcounts["n_sessions"].to_numpy(dtype=np.int64),
        }
    )
    for name, values in provider_alliance.items():
        providers[name] = values

    return AnalysisFrame(
        clients=clients,
        providers=providers,
        memberships=memberships.reset_index(drop=True),
        sessions=sessions.reset_index(drop=True),
        subscales=subscales,
        data_sha256=study.sha256,
        elevated_rule=rule_text,
        alliance_sessions=int(alliance_sessions),
        outcomes=dict(study.outcomes),
        outcomes_declared_in=str(study.settings or ""),
        covariates=dict(study.covariates),
        alliance=study.alliance,
        partially_rated=partially_rated,
        conversions=tuple(study.conversions),
        provider_types=provider_types,
        care_types=care_types,
        care_reference=care_reference,
    )
