"""The one pipeline: spec → study → frame → design → model → sample → gate, and its result, :class:`Fit`.

Every entry point (the ``alliance-bayes`` command, the trust checks, the benchmark, the tests) goes
through :func:`fit` or its steps :func:`design_of` and :func:`fit_design`, so that a fit is made
one way only. A :class:`Fit` holds the draws (one :class:`xarray.DataTree`), the estimands, the
convergence gate and the provenance (``meta``, written as ``run.json``); :meth:`Fit.save` writes
the atomic results bundle and :meth:`Fit.load` reads it back.

A failed gate never raises here: ``fit.passed`` is False, the draws are kept, and
:meth:`Fit.save` writes a bundle marked FAILED.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from alliance_bayes.data.frame import AnalysisFrame, build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.diagnostics import GateResult, check_convergence
from alliance_bayes.inference import SamplerSettings, sample_model
from alliance_bayes.model.families import family_of
from alliance_bayes.model.spec import ModelSpec, load_spec, spec_from_dict
from alliance_bayes.provenance import environment, run_id
from alliance_bayes.storage import read_datatree, write_datatree

__all__ = ["Fit", "design_of", "fit", "fit_design", "frame_of", "resolve_spec", "settings_for"]

#: Columns of :meth:`Fit.summary`.
SUMMARY_COLUMNS = (
    "mean", "sd", "hdi95_low", "hdi95_high", "prob_positive",
    "ess_bulk", "ess_tail", "r_hat", "mcse_mean", "units",
)  # fmt: skip
# Run metadata and the gate (judged on every draw) in the cached DataTree's root attributes.
_META_ATTR = "alliance_bayes_run"
_GATE_ATTR = "alliance_bayes_gate"


def resolve_spec(spec: str | os.PathLike[str] | ModelSpec) -> ModelSpec:
    """A spec object from a shipped spec's name, a path to a TOML file, or a spec object."""
    return spec if isinstance(spec, ModelSpec) else load_spec(spec)


def frame_of(spec: ModelSpec, study: RawStudy) -> AnalysisFrame:
    """The analysis frame of ``study`` under the data options of ``spec`` (elevation rule, cut-offs)."""
    d = spec.data
    return build_frame(
        study,
        elevated_by=d.elevated_by,
        who5_cutoff=d.who5_cutoff,
        phq9_cutoff=d.phq9_cutoff,
        alliance_sessions=spec.predictors.alliance_sessions,
    )


def design_of(spec: ModelSpec, source: RawStudy | AnalysisFrame | str | os.PathLike[str]):
    """The arrays the model of ``spec`` needs, from a study (folder or loaded) or a frame.

    Raises
    ------
    DataContractError
        The study breaks the data contract.
    DesignError
        The data cannot support the model (e.g. no client left after the spec's filters).
    """
    if isinstance(source, str | os.PathLike):
        source = load_study(source)
    frame = frame_of(spec, source) if isinstance(source, RawStudy) else source
    return family_of(spec).prepare(spec, frame)


def settings_for(
    spec: ModelSpec,
    *,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    progress: bool = True,
    cores: int | None = None,
) -> SamplerSettings:
    """The spec's ``[sampler]`` settings with the given overrides (``None`` keeps the spec's).

    ``cores`` is the number of threads the chains run on (default: every available CPU).
    """
    return SamplerSettings.from_spec(
        spec.sampler,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        sampler=sampler,
        progressbar=progress,
        cores=cores,
    )


def fit(
    spec: str | os.PathLike[str] | ModelSpec,
    study: RawStudy | str | os.PathLike[str],
    *,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    progress: bool = True,
    cache: str | os.PathLike[str] | None = None,
) -> Fit:
    """Fit one model to one study.

    Parameters
    ----------
    spec : str, path or ModelSpec
        A shipped spec's name (``"who5_change"``), a path to a TOML file, or a spec from
        :func:`~alliance_bayes.model.spec.load_spec`.
    study : RawStudy or path
        A study from :func:`~alliance_bayes.data.load.load_study`, or its folder.
    draws, tune, chains, seed, sampler : optional
        Override the spec's ``[sampler]`` table (``None`` keeps it).
    progress : bool
        Show the sampler's progress display.
    cache : path, optional
        Keep the draws in this folder and reuse them when the same spec, data and settings are
        fitted again (the trust checks share fits this way).

    Returns
    -------
    Fit
        Whatever the gate says; check :attr:`Fit.passed` before using the estimates.
    """
    started = time.perf_counter()
    spec = resolve_spec(spec)
    if not isinstance(study, RawStudy):
        study = load_study(study)
    design = design_of(spec, study)
    settings = settings_for(
        spec, draws=draws, tune=tune, chains=chains, seed=seed, sampler=sampler, progress=progress
    )
    result = fit_design(
        spec,
        design,
        settings,
        forbidden_ids=study.clients["client_id"].astype(str),
        cache=cache,
        started=started,
    )
    # what the loader converted (value labels, declared missing codes), for the report's Clients
    result.meta["conversions"] = [c.to_dict() for c in study.conversions]
    return result


def fit_design(
    spec: ModelSpec,
    design,
    settings: SamplerSettings,
    *,
    forbidden_ids=(),
    cache: str | os.PathLike[str] | None = None,
    started: float | None = None,
    draws_only: bool = False,
) -> Fit:
    """Sample the model of ``spec`` on a prepared design, run the gate and collect the provenance.

    ``draws_only`` keeps the posterior and sample stats only (no predictive draws or log
    densities): for refits whose draws are pooled (:mod:`alliance_bayes.imputation`).

    ``forbidden_ids`` are the study's raw client identifiers, which :meth:`Fit.save` checks never
    reach the bundle. With ``cache`` the DataTree is kept as ``<cache>/<family>-<digest>.nc``, the
    digest covering the spec as run (but its name and description), the data hash, every array of
    the design and the sampler settings.
    """
    started = time.perf_counter() if started is None else started
    if spec.data.followup_imputations:
        from alliance_bayes.imputation import fit_imputed

        return fit_imputed(
            spec,
            design,
            settings,
            fit_design=fit_design,
            assemble=_assemble,
            forbidden_ids=forbidden_ids,
            cache=cache,
            started=started,
        )
    family = family_of(spec)
    path = _cache_path(cache, spec, design, settings, draws_only)
    if path is not None and path.is_file():
        dt = read_datatree(path)
        meta = json.loads(dt.attrs.pop(_META_ATTR))
        # The same model under another name (names only name results folders) shares the fit.
        meta.update(spec=spec.name, spec_as_run=spec.to_dict())
        gate = GateResult.from_json(json.loads(dt.attrs.pop(_GATE_ATTR)))
        return _assemble(spec, dt, meta, design=design, forbidden_ids=forbidden_ids, gate=gate)

    scales = family.scales(design)
    dt, timings = sample_model(family.build(spec, design), settings, draws_only=draws_only)
    t = time.perf_counter()
    dt = family.complete(spec, design, dt, settings.seed, draws_only=draws_only)
    timings["complete"] = time.perf_counter() - t
    # Provider types travel with the draws so that figures can group provider effects.
    providers = design.frame.providers["provider_type"].astype(str).to_numpy()
    constant = dt["constant_data"].to_dataset() if "constant_data" in dt.children else xr.Dataset()
    dt["constant_data"] = constant.assign(provider_type=("provider", providers)).assign_coords(
        provider=design.frame.providers["provider"].tolist()
    )
    estimands = family.estimands(spec, dt["posterior"].to_dataset(), scales)
    gate = check_convergence(dt, estimands)  # before finish: the gate sees every draw
    # The gate has every element's bulk ESS already; a second pass cost as much as the gate's
    # R-hat on a million-client platform's tens of thousands of provider effects.
    ess_rate = _min_ess_bulk(gate) / timings["sampling"] if timings["sampling"] > 0 else np.nan
    dt = family.finish(dt)
    timings["wall_total"] = time.perf_counter() - started
    meta = _run_metadata(spec, design, settings, timings)
    meta["scales"] = scales
    meta.update(_likelihood_facts(dt))
    meta["min_ess_bulk_per_second"] = ess_rate
    meta["convergence_passed"] = bool(gate.passed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        cached = dt.copy()
        cached.attrs = {
            **dt.attrs,
            _META_ATTR: json.dumps(meta, default=str),
            _GATE_ATTR: json.dumps(gate.to_json(), default=str),
        }
        write_datatree(cached, tmp)
        os.replace(tmp, path)
    return _assemble(
        spec, dt, meta, design=design, forbidden_ids=forbidden_ids, gate=gate, estimands=estimands
    )


def _min_ess_bulk(gate: GateResult) -> float:
    """The smallest bulk ESS over every posterior element and estimand the gate checked."""
    value = next((c.value for c in gate.checks if c.name == "ess_bulk"), None)
    return float("nan") if value is None else float(value)


def _cache_path(
    cache, spec: ModelSpec, design, settings: SamplerSettings, draws_only: bool = False
) -> Path | None:
    if cache is None:
        return None
    sampler = {k: v for k, v in settings.to_dict().items() if k != "progressbar"}
    # Every array of the design is in the key, not only the study's hash: refits to imputed or
    # simulated outcomes share the study, and a subset of clients keeps the whole design's centring.
    arrays = hashlib.sha256()
    for name, value in sorted(vars(design).items()):
        if isinstance(value, np.ndarray | float | int):
            arrays.update(name.encode() + np.ascontiguousarray(value).tobytes())
    model = {k: v for k, v in spec.to_dict().items() if k not in ("name", "description")}
    key = json.dumps(
        [
            model,
            design.frame.data_sha256,
            design.n_clients,
            arrays.hexdigest(),
            sampler,
            *(["draws only"] if draws_only else []),
        ],
        sort_keys=True,
        default=str,
    )
    return (
        Path(cache) / f"{family_of(spec).name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.nc"
    )


def _assemble(
    spec, dt, meta, *, design=None, forbidden_ids=(), gate=None, path=None, estimands=None
) -> Fit:
    family = family_of(spec)
    scales = meta.get("scales") or {}
    if estimands is None:
        estimands = family.estimands(spec, dt["posterior"].to_dataset(), scales)
    if gate is None:
        gate = check_convergence(dt, estimands)
    prior = None
    if "prior" in dt.children:
        # The same estimands under the prior: prior-vs-posterior plots, Savage–Dickey ratios.
        prior = family.estimands(spec, dt["prior"].to_dataset(), scales)
    return Fit(spec, dt, estimands, gate, meta, design, frozenset(forbidden_ids), path, prior)


def _likelihood_facts(dt: xr.DataTree) -> dict[str, Any]:
    """How the likelihood was computed, and which clients the pointwise groups hold."""
    facts = {"likelihood_form": dt["posterior"].attrs.get("likelihood_form", "per_client")}
    if "sampled_providers" in dt["posterior"].attrs:
        facts["sampled_providers"] = int(dt["posterior"].attrs["sampled_providers"])
    if "log_likelihood" in dt.children:
        attrs = dt["log_likelihood"].attrs
        if attrs.get("clients_kept", 0) < attrs.get("clients_of", 0):
            facts["pointwise_clients"] = (
                f"{attrs['clients_kept']} of {attrs['clients_of']} clients (random subset) in the "
                "pointwise log-likelihood and the predictive draws"
            )
    return facts


def _run_metadata(spec: ModelSpec, design, settings: SamplerSettings, timings) -> dict[str, Any]:
    """Everything needed to reproduce and audit a run (written as ``run.json``)."""
    source = Path(spec.source)
    return {
        "spec": spec.name,
        "spec_as_run": spec.to_dict(),
        "spec_toml": source.read_text(encoding="utf-8") if source.is_file() else "",
        "family": family_of(spec).name,
        "outcome": spec.outcome,
        "outcome_label": spec.outcome_label,
        "outcome_range": list(spec.outcome_range),
        # slopes per point of the study's declared alliance instrument, where it declares one
        "effect_units": spec.effect_units_on(
            getattr(getattr(design.frame, "alliance", None), "scale", None)
        ),
        "seed": settings.seed,
        "sampler": settings.sampler,
        "backend": settings.backend,
        "chains": settings.chains,
        "draws": settings.draws,
        "tune": settings.tune,
        "sampler_settings": settings.to_dict(),
        "data_sha256": design.frame.data_sha256,
        "exclusions": design.exclusions,
        "n_clients": design.n_clients,
        "n_providers": len(design.frame.providers),
        "timings_s": timings,
        **environment(),
    }


@dataclass
class Fit:
    """One fitted model: draws, estimands, gate and provenance.

    Attributes
    ----------
    spec : ModelSpec
        The spec as run.
    datatree : xarray.DataTree
        Every group: posterior, sample_stats, prior, prior_predictive, posterior_predictive,
        log_likelihood, log_prior, observed_data, constant_data (and the family's own).
    estimands : xarray.Dataset
        The stable-named quantities the tables report, one variable each over (chain, draw).
    gate : GateResult
        The convergence gate (R-hat, ESS, divergences, E-BFMI, tree depth).
    meta : dict
        Provenance: spec, versions, sampler, backend, seed, data hash, timings (``run.json``).
    design : optional
        The arrays the model was fitted to (``None`` for a fit loaded from a bundle).
    path : pathlib.Path, optional
        The bundle this fit was saved to or loaded from.
    prior_estimands : xarray.Dataset, optional
        The estimands computed from the prior draws (absent when the run has no prior group).
    """

    spec: ModelSpec
    datatree: xr.DataTree
    estimands: xr.Dataset
    gate: GateResult
    meta: dict[str, Any]
    design: Any = None
    forbidden_ids: frozenset[str] = field(default=frozenset(), repr=False)
    path: Path | None = None
    prior_estimands: xr.Dataset | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """The convergence gate's verdict: use the estimates only when True."""
        return bool(self.gate.passed)

    @property
    def timings(self) -> dict[str, float]:
        """Wall seconds per phase (``compile``, ``sampling``, ``wall_total``, ...)."""
        return dict(self.meta.get("timings_s", {}))

    def summary(self) -> pd.DataFrame:
        """Posterior summary, one row per estimand (index), columns :data:`SUMMARY_COLUMNS`.

        ``hdi95_*`` is the 95% highest density interval, ``prob_positive`` the share of draws above
        zero, ``r_hat`` the rank-normalised split R-hat, ``ess_*`` bulk and tail ESS (Vehtari et
        al. 2021, doi:10.1214/20-BA1221), ``mcse_mean`` the Monte Carlo SE of the mean. The tail
        ESS is at the 5% and 95% quantiles, as Vehtari et al.; ArviZ's ``ess(method="tail")``
        defaults to 11% and 89% (``attrs["ess_tail"]`` says so).
        """
        from alliance_bayes.fit_verbs import TAIL_ESS_CONVENTION
        from alliance_bayes.report.estimands import estimand_table

        table = estimand_table(self.estimands).set_index("estimand")[list(SUMMARY_COLUMNS)]
        table.attrs["ess_tail"] = TAIL_ESS_CONVENTION
        return table

    def ranef(self, prob: float = 0.95) -> pd.DataFrame:
        """Provider effects, one row per provider and term (:func:`~alliance_bayes.fit_verbs.ranef`).

        ``fit.ranef().query("term == 'intercept'").nlargest(5, "mean")``: the five providers
        whose clients do best at equal alliance, with 95% HDIs and their types.
        """
        from alliance_bayes import fit_verbs

        return fit_verbs.ranef(self.datatree, prob)

    def prior_summary(self) -> pd.DataFrame:
        """Every prior of the model, on the data's units, and why (``fit_verbs.prior_summary``).

        ``fit.prior_summary()[["parameter", "distribution"]]``: ``σ (residual SD)``,
        ``Half-Normal(20)``, ...
        """
        from alliance_bayes import fit_verbs

        return fit_verbs.prior_summary(self.spec, self.meta.get("scales"))

    def loo(self, study: RawStudy | str | os.PathLike[str] | None = None) -> Any:
        """PSIS-LOO per client with the SE over provider clusters (:func:`~alliance_bayes.fit_verbs.loo`).

        ``res = fit.loo(); res.elpd, res.se, res.se_provider``. A loaded fit needs ``study``
        (the data it was fitted to) for the provider clusters; without it ``se_provider`` is NaN.
        """
        from alliance_bayes import fit_verbs

        design = self._design(study, required=False)
        clusters = None if design is None else fit_verbs.main_provider_of(design)
        return fit_verbs.loo(self.datatree, clusters)

    def predict(
        self,
        new_clients: pd.DataFrame,
        *,
        summary: bool = True,
        ndraws: int | None = None,
        seed: int = 0,
        study: RawStudy | str | os.PathLike[str] | None = None,
    ) -> Any:
        """Posterior predictive follow-up of new clients (:func:`~alliance_bayes.fit_verbs.predict`).

        ``fit.predict(pd.DataFrame({"provider": ["P0003", "new"], "provider_type": ["coach",
        "coach"], "who5_baseline": [32, 32], "age": [40, 40], "male": [0, 0],
        "days_in_care": [90, 90], "alliance_goal": [4.2, 4.2], "alliance_bond": [4.5, 4.5]}))``:
        the same client with a provider of the fit and with a new coach (a wider interval).
        Averaged-score models only: the latent, ratings and change families raise
        :class:`~alliance_bayes.fit_verbs.PredictionNotImplemented`. A loaded fit needs
        ``study`` (for the centring of the predictors).
        """
        from alliance_bayes import fit_verbs

        fit_verbs._regression_only(self.spec, "predict")
        design = self._design(study)
        posterior = self.datatree["posterior"].to_dataset()
        return fit_verbs.predict(
            self.spec, posterior, design, new_clients, summary=summary, ndraws=ndraws, seed=seed
        )

    def conditional_effects(self, prob: float = 0.95, n_grid: int = 41) -> pd.DataFrame:
        """Expected follow-up across the alliance range per care type, tidy
        (:func:`~alliance_bayes.fit_verbs.conditional_effects`).

        ``ce = fit.conditional_effects(); ce[ce.predictor == "goal"]``: ``value``, ``estimate``,
        ``lower``, ``upper`` per care type. Averaged-score models only (as :meth:`predict`).
        """
        from alliance_bayes import fit_verbs

        posterior = self.datatree["posterior"].to_dataset()
        return fit_verbs.conditional_effects(
            self.spec, posterior, self.meta, prob=prob, n_grid=n_grid
        )

    def pp_check(self, kind: str = "kde", **kwargs: Any) -> Any:
        """A posterior predictive check by arviz-plots (:func:`~alliance_bayes.fit_verbs.pp_check`).

        ``fit.pp_check("ecdf")``, ``fit.pp_check("pit")``, ``fit.pp_check("tstat",
        t_stat="mean")``, ``fit.pp_check("loo_pit")``; returns the PlotCollection.
        """
        from alliance_bayes import fit_verbs

        return fit_verbs.pp_check(self.datatree, kind, **kwargs)

    def psense(self, var_names: list[str] | None = None) -> pd.DataFrame:
        """Power-scaling prior and likelihood sensitivity per estimand
        (:func:`~alliance_bayes.fit_verbs.psense`).

        ``fit.psense(["b_goal_within"])``. A fit in memory uses every draw; a loaded bundle the
        draws whose log-likelihood it keeps, and says so (a warning and ``attrs["note"]``).
        """
        from alliance_bayes import fit_verbs

        return fit_verbs.psense(self.datatree, self.estimands, var_names)

    def update(self, *, study: RawStudy | str | os.PathLike[str] | None = None, **overrides) -> Fit:
        """Refit with new data, sampler settings or spec values (:func:`~alliance_bayes.fit_verbs.update`).

        ``fit.update(seed=2)``, ``fit.update(draws=2000)``, ``fit.update(study=other_study)``,
        ``fit.update(priors={"sigma_sd": 10})``; compiled code is reused where only data or
        sampler settings change.
        """
        from alliance_bayes import fit_verbs

        return fit_verbs.update(self, study=study, **overrides)

    def _design(self, study=None, *, required: bool = True):
        """The fitted design, or the study's rebuilt under the spec (checked against the data hash)."""
        if study is None:
            if self.design is None and required:
                raise ValueError(
                    "a fit loaded from a bundle holds no data: give study= (the data it was "
                    "fitted to)"
                )
            return self.design
        if not isinstance(study, RawStudy):
            study = load_study(study)
        if study.sha256 != self.meta.get("data_sha256"):
            raise ValueError("study= is not the data this fit was fitted to (its hash differs)")
        return design_of(self.spec, study)

    def hypotheses(self, *statements: str, rope: float | None = None) -> pd.DataFrame:
        """Decide statements about estimands: ``fit.hypotheses("b_goal_within > b_bond_within")``.

        Without ``statements`` the spec's ``[hypotheses] tests`` are decided. Each row gives the
        posterior and prior probability, the share inside the region of practical equivalence
        (``rope`` in outcome points; default the spec's), a decision and a Bayes factor (see
        :mod:`alliance_bayes.report.hypotheses`). Raises ``HypothesisError`` for unreadable text
        or unknown estimands.
        """
        from alliance_bayes.report.hypotheses import hypothesis_table

        return hypothesis_table(
            statements or self.spec.hypotheses.tests,
            self.estimands,
            self.prior_estimands,
            rope=self.spec.rope if rope is None else rope,
            outcome_units=self.spec.outcome_units,
            strict=bool(statements),
        )

    def tables(self, fmt: str = "markdown") -> str:
        """The paper tables as ``"markdown"`` or ``"latex"`` (what ``tables.md``/``.tex`` hold,
        the spec's hypotheses decided included)."""
        from alliance_bayes.report.tables import tables_latex, tables_markdown

        writers = {"markdown": tables_markdown, "latex": tables_latex}
        if fmt not in writers:
            raise ValueError(f"fmt must be one of {sorted(writers)}, not {fmt!r}")
        hypotheses = self.hypotheses() if self.spec.hypotheses.tests else None
        return writers[fmt](self.estimands, self.meta, hypotheses=hypotheses)

    def save(
        self,
        results: str | os.PathLike[str] = "results",
        *,
        run: str | None = None,
        figure_formats: tuple[str, ...] | None = None,
        figure_workers: int | Executor | None = 1,
        _links_root: Path | None = None,
        _draws_file: Path | None = None,
    ) -> Path:
        """Write the bundle ``<results>/<spec>/<run>/`` atomically and return its folder.

        A fit that failed the gate is saved too, marked FAILED at the top of ``report.md`` and
        ``diagnostics.md``. ``run`` defaults to the UTC time plus a digest of the spec, data and
        settings. ``figure_workers`` processes draw the figures, or a
        :func:`~alliance_bayes.report.figures.figure_pool` already started; ``None`` chooses one
        per CPU (see :func:`~alliance_bayes.report.figures.figure_workers`: a script asking for
        more than one needs an ``if __name__ == "__main__":`` guard).
        """
        from alliance_bayes.report.bundle import ReportContent, write_bundle
        from alliance_bayes.report.figures import DEFAULT_FORMATS

        family = family_of(self.spec)
        content = ReportContent(
            equations=family.equations(self.spec),
            data_variables=family.data_variables(self.spec),
            prior_rows=family.prior_rows(self.spec, self.meta.get("scales") or {}),
            prior_estimands=self.prior_estimands,
            hypotheses=self.hypotheses() if self.spec.hypotheses.tests else None,
            description=self.spec.description,
        )

        run = run or run_id(
            self.meta["spec_as_run"], self.meta["data_sha256"], self.meta["sampler_settings"]
        )
        path = write_bundle(
            results,
            self.spec.name,
            run,
            self.datatree,
            self.meta,
            self.estimands,
            self.gate,
            forbidden_ids=self.forbidden_ids,
            figure_formats=figure_formats or DEFAULT_FORMATS,
            figure_workers=figure_workers,
            family_figures=family.figures,
            links_root=_links_root,
            draws_file=_draws_file,
            content=content,
        )
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Fit:
        """Read a bundle written by :meth:`save`: spec, draws, estimands, gate and provenance.

        The estimands are recomputed from the draws (the same numbers as ``estimands.csv``); the
        gate is read from ``diagnostics.json``, as judged on every draw before the bundle was
        written. A bundle written by another major.minor version of the package is refused with
        :class:`~alliance_bayes.fit_verbs.IncompatibleBundleError`, which names both versions
        (:func:`~alliance_bayes.fit_verbs.check_bundle_version`).
        """
        from alliance_bayes.fit_verbs import check_bundle_version

        path = Path(path)
        missing = [
            f for f in ("run.json", "posterior.nc", "diagnostics.json") if not (path / f).is_file()
        ]
        if missing:
            raise FileNotFoundError(
                f"{path} is not a results bundle (missing {', '.join(missing)})"
            )
        meta = json.loads((path / "run.json").read_text(encoding="utf-8"))
        check_bundle_version(meta, str(path))
        spec = spec_from_dict(meta["spec_as_run"], source=str(path / "run.json"))
        gate = GateResult.from_json(json.loads((path / "diagnostics.json").read_text("utf-8")))
        return _assemble(spec, read_datatree(path / "posterior.nc"), meta, gate=gate, path=path)

    def report(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        study: RawStudy | None = None,
        figure_workers: int | Executor | None = 1,
    ) -> Path:
        """Re-render tables, figures and ``report.md`` from the draws, without sampling.

        With ``out`` a complete bundle is written to ``<out>/<spec>/<run>/``; without it the bundle
        this fit was loaded from is replaced (atomically: the new folder is written beside it and
        swapped in). ``study`` (the data the bundle was fitted to) enables the identifier guard;
        ``figure_workers`` is as in :meth:`save`.
        """
        if self.path is None and out is None:
            raise ValueError("this fit has no bundle yet: give out= (or call save())")
        run = self.path.name if self.path is not None else None
        draws = self.path / "posterior.nc" if self.path is not None else None
        forbidden = self.forbidden_ids
        if study is not None:
            forbidden = frozenset(study.clients["client_id"].astype(str))
        again = replace(self, forbidden_ids=forbidden)
        if out is not None:
            return again.save(out, run=run, figure_workers=figure_workers, _draws_file=draws)
        assert self.path is not None
        staging = Path(tempfile.mkdtemp(prefix=f".{run}.report-", dir=self.path.parent.parent))
        try:
            fresh = again.save(
                staging,
                run=run,
                figure_workers=figure_workers,
                _links_root=self.path.parent.parent,
                _draws_file=draws,
            )
            old = self.path.with_name(f".{run}.previous")
            os.replace(self.path, old)
            os.replace(fresh, self.path)
            shutil.rmtree(old)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.path

    def __repr__(self) -> str:
        n_chains = self.datatree["posterior"].sizes.get("chain", 0)
        n_draws = self.datatree["posterior"].sizes.get("draw", 0)
        head = (
            f"Fit({self.spec.name!r}: {self.meta.get('n_clients', '?')} clients, "
            f"{n_chains} chains × {n_draws} draws, {self.gate.headline()})"
        )
        key = self.summary().head(12)[["mean", "sd", "hdi95_low", "hdi95_high", "r_hat"]]
        return head + "\n" + key.round(3).to_string()

    def _repr_html_(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED: do not use these estimates"
        return (
            f"<p><b>{self.spec.name}</b>: {self.meta.get('n_clients', '?')} clients; "
            f"convergence {verdict}</p>" + self.summary().round(3).to_html()
        )
