"""The result of a fit, :class:`Fit`: draws, estimands, gate and provenance, with the verbs.

:mod:`alliance_bayes.fitting` (the one pipeline) makes a :class:`Fit` through :func:`assemble`;
:meth:`Fit.save` writes the atomic results bundle and :meth:`Fit.load` reads it back. A failed
gate never raises here: ``fit.passed`` is False, the draws are kept, and :meth:`Fit.save` writes a
bundle marked FAILED.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.diagnostics import GateResult, check_convergence
from alliance_bayes.model.families import family_of
from alliance_bayes.provenance import run_id
from alliance_bayes.spec import ModelSpec, spec_from_dict
from alliance_bayes.storage import read_datatree

__all__ = ["SUMMARY_COLUMNS", "Fit", "assemble"]

#: Columns of :meth:`Fit.summary`.
SUMMARY_COLUMNS = (
    "mean", "sd", "hdi95_low", "hdi95_high", "prob_positive",
    "ess_bulk", "ess_tail", "r_hat", "mcse_mean", "units",
)  # fmt: skip


def assemble(
    spec, dt, meta, *, design=None, forbidden_ids=(), gate=None, path=None, estimands=None
) -> Fit:
    """A :class:`Fit` from draws: the family's estimands of the posterior (and of the prior,
    where drawn) and the convergence gate on both, unless given (a loaded bundle's gate is the
    one judged on every draw before it was written)."""
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

    def conditional_effects(
        self, effects: str | Sequence[str] | None = None, *, prob: float = 0.95, n_grid: int = 41
    ) -> pd.DataFrame:
        """Expected follow-up across the alliance range per care type, tidy
        (:func:`~alliance_bayes.fit_verbs.conditional_effects`).

        ``fit.conditional_effects("goal")`` (or ``"alliance_goal"``, or several names; all
        predictors without one): ``predictor``, ``care_type``, ``value``, ``estimate``,
        ``lower``, ``upper``. Averaged-score models only (as :meth:`predict`).
        """
        from alliance_bayes import fit_verbs

        posterior = self.datatree["posterior"].to_dataset()
        return fit_verbs.conditional_effects(
            self.spec, posterior, self.meta, effects, prob=prob, n_grid=n_grid
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
        from alliance_bayes.fitting import design_of

        if not isinstance(study, RawStudy):
            study = load_study(study)
        if study.sha256 != self.meta.get("data_sha256"):
            raise ValueError("study= is not the data this fit was fitted to (its hash differs)")
        return design_of(self.spec, study)

    def hypotheses(self, *statements: str, rope: float | None = None) -> pd.DataFrame:
        """Decide statements about estimands: ``fit.hypotheses("b_goal_within > b_bond_within")``.

        Without ``statements`` the spec's ``[hypotheses] tests`` are decided. Each row gives the
        posterior and prior probability, the share inside the region of practical equivalence
        (``rope`` in outcome points, for a slope per point of the 1–5 alliance scale and
        rescaled to a declared one; default the spec's), a decision and a Bayes factor (see
        :mod:`alliance_bayes.report.hypotheses`). Raises ``HypothesisError`` for unreadable text
        or unknown estimands.
        """
        from alliance_bayes.report.hypotheses import hypothesis_table, rope_settings

        return hypothesis_table(
            statements or self.spec.hypotheses.tests,
            self.estimands,
            self.prior_estimands,
            outcome_units=self.spec.outcome_units,
            strict=bool(statements),
            **rope_settings(self.spec.rope if rope is None else rope, self.meta),
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
        # The fit's scales say which terms the model has (one care type: no care-type effects).
        scales = self.meta.get("scales") or {}
        content = ReportContent(
            equations=family.equations(self.spec, scales),
            data_variables=family.data_variables(self.spec, scales),
            prior_rows=family.prior_rows(self.spec, scales),
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
        return assemble(spec, read_datatree(path / "posterior.nc"), meta, gate=gate, path=path)

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
