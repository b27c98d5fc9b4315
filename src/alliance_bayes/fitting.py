"""The one pipeline: spec → study → frame → design → model → sample → gate → :class:`Fit`.

Every entry point (the ``alliance-bayes`` command, the trust checks, the benchmark, the tests) goes
through :func:`fit` or its steps :func:`design_of` and :func:`fit_design`, so that a fit is made
one way only. Its result, :class:`~alliance_bayes.result.Fit` (in :mod:`alliance_bayes.result`),
holds the draws (one :class:`xarray.DataTree`), the estimands, the convergence gate and the
provenance (``meta``, written as ``run.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from alliance_bayes.data.frame import ELEVATED_RULES, AnalysisFrame, build_frame
from alliance_bayes.data.load import RawStudy, load_study
from alliance_bayes.diagnostics import GateResult, check_convergence
from alliance_bayes.inference import SamplerSettings, sample_model
from alliance_bayes.model.families import family_of
from alliance_bayes.provenance import environment
from alliance_bayes.result import Fit, assemble
from alliance_bayes.spec import RATING_OUTCOMES, ModelSpec, load_spec
from alliance_bayes.storage import read_datatree, write_datatree

__all__ = ["Fit", "design_of", "fit", "fit_design", "frame_of", "resolve_spec", "settings_for"]

# Run metadata and the gate (judged on every draw) in the cached DataTree's root attributes.
_META_ATTR = "alliance_bayes_run"
_GATE_ATTR = "alliance_bayes_gate"


def resolve_spec(spec: str | os.PathLike[str] | ModelSpec) -> ModelSpec:
    """A spec object from a shipped spec's name, a path to a TOML file, or a spec object."""
    return spec if isinstance(spec, ModelSpec) else load_spec(spec)


def frame_of(spec: ModelSpec, study: RawStudy) -> AnalysisFrame:
    """The analysis frame of ``study`` under the data options of ``spec`` (elevation rule, cut-offs)."""
    d = spec.data
    rule = d.elevated_by
    declared = study.outcomes.get(rule)
    if rule not in ELEVATED_RULES and (declared is None or declared.cutoff is None):
        # The frame's own flag only informs its summary: a spec whose sample uses a rule the
        # study cannot apply is refused by its family, naming the spec and the outcomes the study
        # has (alliance_bayes.model.elevated); one that takes every client never uses it.
        rule = "who5"
    return build_frame(
        study,
        elevated_by=rule,
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
        :func:`~alliance_bayes.spec.load_spec`.
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
            assemble=assemble,
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
        return assemble(spec, dt, meta, design=design, forbidden_ids=forbidden_ids, gate=gate)

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
    return assemble(
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
    instrument = getattr(design.frame, "alliance", None)
    label, outcome_range = spec.outcome_label, list(spec.outcome_range)
    if spec.outcome in RATING_OUTCOMES and instrument is not None:
        # the ratings themselves are the outcome: on the study's declared scale
        label = f"Session alliance rating ({instrument.scale})"
        outcome_range = [instrument.low, instrument.high]
    return {
        "spec": spec.name,
        "spec_as_run": spec.to_dict(),
        "spec_toml": source.read_text(encoding="utf-8") if source.is_file() else "",
        "family": family_of(spec).name,
        "outcome": spec.outcome,
        "outcome_label": label,
        "outcome_range": outcome_range,
        # slopes per point of the study's declared alliance instrument, where it declares one
        "effect_units": spec.effect_units_on(None if instrument is None else instrument.scale),
        "seed": settings.seed,
        "sampler": settings.sampler,
        "backend": settings.backend,
        "chains": settings.chains,
        "draws": settings.draws,
        "tune": settings.tune,
        "sampler_settings": settings.to_dict(),
        "data_sha256": design.frame.data_sha256,
        "exclusions": design.exclusions,
        # the rule behind "not elevated at baseline", with its cut-off (a declared outcome's comes
        # from the study's study.toml, which the data hash does not cover)
        **(
            {"elevated_rule": design.frame.elevated_rule}
            if spec.data.sample == "elevated" and design.frame.elevated_rule
            else {}
        ),
        # what the loader converted (value labels, declared missing codes): the report's Clients
        "conversions": [c.to_dict() for c in getattr(design.frame, "conversions", ())],
        "levels_without_clients": dict(getattr(design.frame, "levels_without_clients", {})),
        "n_clients": design.n_clients,
        "n_providers": len(design.frame.providers),
        "timings_s": timings,
        **environment(),
    }
