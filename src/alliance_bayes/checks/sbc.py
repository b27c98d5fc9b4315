"""Simulation-based calibration (SBC) of a model on the study's own design.

SBC (Talts et al. 2018, arXiv:1804.06788) checks the computation: if parameters
:math:`\\tilde\\theta \\sim p(\\theta)` are drawn from the prior, data :math:`\\tilde y \\sim p(y \\mid
\\tilde\\theta)` from the likelihood, and the model is refitted to :math:`\\tilde y`, then the rank of
:math:`\\tilde\\theta` among :math:`L` (near-independent) posterior draws is uniform on
:math:`0, \\dots, L` for every scalar quantity, whenever the sampler is correct for that model. A
non-uniform rank distribution flags a computational problem (or, as the CI test uses it, a fitting
model whose prior differs from the one that generated the data).

The design
    Every replicate uses the same design: the clients, care types, multiple-membership weights,
    covariates and within/between alliance parts of a study simulated by the package's own simulator
    (:func:`alliance_bayes.data.simulate.simulate_study`, reduced counts as in
    ``SimulationConfig.small()``), passed through :func:`~alliance_bayes.data.frame.build_frame` and
    the model family's ``prepare`` exactly as real data would be. Only the data the model
    observes are replaced, by a draw from its prior predictive distribution: the outcome of a
    regression model; the outcomes and every session rating of the latent model (per
    client–provider membership, the design keeping each membership's number of ratings).

The replicates
    Replicate ``i`` takes its seeds from ``SeedSequence(seed, spawn_key=(i,))``, so a replicate's
    draws do not depend on how many replicates are run or on which worker runs it. Each worker process
    compiles the fitting model once with nutpie (:func:`alliance_bayes.inference.compile_for_refit`)
    in its refittable form (:attr:`~alliance_bayes.model.families.Family.build_refit`) and refits
    it to each new data set by swapping the observed variables' data containers
    (:func:`alliance_bayes.inference.sample_compiled`). Each replicate's draws are thinned to
    about as many as their smallest effective sample size (at most ``thin_to``), so that the draws
    ranked are nearly independent (:func:`thinning_stride`); the number kept, :math:`L`, is
    recorded per replicate. Each replicate is written as one small
    JSON file as soon as it finishes; a rerun skips the replicates already written, so an interrupted
    run resumes and a finished run can be extended with more replicates.

The quantities
    Ranks are computed for the key parameters (``mu_b`` elements, ``sd_provider``, ``sigma``,
    ``b_baseline``, care-type slopes, ``sd_provider_slope``, care-type intercepts ``b_care``; for
    the latent model also ``discrimination``, ``cutpoint_top``, ``sd_provider_alliance``,
    ``provider_type_alliance`` and ``rho_outcomes``) and
    for the log-likelihood of the replicate's data, :math:`\\log p(\\tilde y \\mid \\theta)`, a
    data-dependent test quantity that is sensitive to miscalibration that no single parameter shows
    (Modrák et al. 2023, doi:10.1214/23-BA1404).

Uniformity
    Each rank is turned into a fractional rank (PIT) :math:`u = (r + U)/(L + 1)`, :math:`U \\sim
    \\text{Uniform}(0, 1)` (which also breaks ties), so that :math:`u` is exactly uniform on (0, 1)
    under calibration. Two tests per quantity: a chi-square test on equal-width bins, and the
    graphical ECDF test of Säilynoja, Bürkner & Vehtari (2022, Statistics and Computing 32:32,
    doi:10.1007/s11222-022-10090-6), whose simultaneous 95% band is found by simulation and whose
    p-value is the null probability of a smaller pointwise tail probability than the one observed.
    The verdict for the whole set uses a Bonferroni correction over both tests of every quantity.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from alliance_bayes.checks.base import CheckResult
from alliance_bayes.spec import ModelSpec, load_spec

LOGLIK = "loglik"  # label of the log-likelihood test quantity
REPLICATES_DIR = "replicates"

#: Key estimands ranked in every replicate: (variable, fixed coordinates); remaining dimensions are
#: expanded, and a variable the model lacks is skipped.
ESTIMANDS: tuple[tuple[str, dict[str, str]], ...] = (
    ("mu_b", {}),
    ("sd_provider", {}),
    ("sigma", {}),
    ("b_baseline", {}),
    ("b", {"care_type": "coach", "subscale": "goal", "level": "within"}),
    ("b", {"care_type": "therapist", "subscale": "bond", "level": "between"}),
    ("sd_provider_slope", {}),
    ("b_alliance", {}),
    ("b_care", {}),
    # the latent model's measurement part and outcome correlation
    ("discrimination", {}),
    ("cutpoint_top", {}),
    ("sd_provider_alliance", {}),
    ("provider_type_alliance", {}),
    ("rho_outcomes", {}),
)


class SBCError(ValueError):
    """An SBC run cannot proceed as asked (e.g. its folder holds a run with other settings)."""


@dataclass(frozen=True)
class SBCDesign:
    """Counts and seed of the simulated study whose design every replicate shares.

    Defaults are those of :meth:`SimulationConfig.small` (300 clients, 10 therapists, 20 coaches);
    clients without a simulated follow-up drop out in :func:`prepare`, as in a real analysis.
    """

    n_coach_clients: int = 195
    n_therapist_clients: int = 54
    n_both_clients: int = 51
    n_therapists: int = 10
    n_coaches: int = 20
    seed: int = 11


@dataclass(frozen=True)
class SBCSettings:
    """Everything that determines an SBC run's replicates (recorded in ``sbc.json``).

    ``spec`` is the fitting model (a name in ``models/`` or a path); ``generate_spec`` the model whose
    prior generates the data (``None``: the fitting model, i.e. a proper SBC). Both must have the
    same parameters.
    """

    spec: str
    generate_spec: str | None = None
    design: SBCDesign = field(default_factory=SBCDesign)
    replicates: int = 200
    seed: int = 20230505
    chains: int = 4
    tune: int = 1000
    draws: int = 500
    thin_to: int = 200
    thinning: str = "ess"
    target_accept: float = 0.9
    backend: str = "numba"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SBCSettings:
        d = dict(d)
        d["design"] = SBCDesign(**d["design"])
        # a run recorded before ESS-based thinning ranked among a fixed number of draws
        d.setdefault("thinning", "fixed")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """What must match for replicates of two runs to be mixed (all but the replicate count)."""
        d = self.to_dict()
        d.pop("replicates")
        return d


# --- the design ---------------------------------------------------------------------------------


def sbc_design(spec: ModelSpec, design: SBCDesign):
    """The design arrays of ``spec`` on a study simulated by the package's simulator."""
    from alliance_bayes.data.load import RawStudy
    from alliance_bayes.data.simulate import SimulationConfig, simulate_study
    from alliance_bayes.fitting import design_of

    counts = {k: v for k, v in dataclasses.asdict(design).items() if k != "seed"}
    study = simulate_study(SimulationConfig.small(**counts), seed=design.seed)
    return design_of(spec, RawStudy.from_frames(study.providers, study.clients, study.sessions))


def replicate_seeds(seed: int, index: int) -> tuple[int, int, int]:
    """(prior, sampler, tie-break) seeds of replicate ``index``, independent of the run's size."""
    state = np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(3)
    return int(state[0]), int(state[1]), int(state[2])


def quantity_labels(model) -> list[tuple[str, str, dict[str, str]]]:
    """``(label, variable, coordinates)`` of every scalar estimand ranked for ``model``."""
    out = []
    dims_of = model.named_vars_to_dims
    for var, fixed in ESTIMANDS:
        if var not in model.named_vars:
            continue
        dims = dims_of.get(var, ())
        if any(k not in dims or v not in model.coords[k] for k, v in fixed.items()):
            continue
        free = [d for d in dims if d not in fixed]
        grids = [list(model.coords[d]) for d in free]
        for combo in _product(grids):
            sel = {**fixed, **dict(zip(free, combo, strict=True))}
            label = var if not dims else f"{var}[{','.join(sel[d] for d in dims)}]"
            out.append((label, var, sel))
    # de-duplicate (a fixed selection may repeat an expanded one), keeping order
    seen: set[str] = set()
    return [q for q in out if not (q[0] in seen or seen.add(q[0]))]


def _product(grids: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for g in grids:
        out = [(*o, v) for o in out for v in g]
    return out


# --- one worker: compile once, run many replicates ------------------------------------------------


class _Worker:
    """The compiled pieces one process needs: prior draws, refit, log-likelihood."""

    def __init__(self, settings: SBCSettings):
        import pytensor
        from pymc.pytensorf import compile as pm_compile
        from pymc.pytensorf import find_rng_nodes

        from alliance_bayes.inference import (
            COMPILE_FLAGS,
            SamplerSettings,
            compile_for_refit,
            compile_log_density,
        )

        self.settings = settings
        # Replicates swap the data containers of one compiled model, so the likelihood is
        # per client: a collapsed one holds the data as sufficient statistics in the graph.
        fit_spec = load_spec(settings.spec, likelihood_form="per_client")
        gen_spec = (
            load_spec(settings.generate_spec, likelihood_form="per_client")
            if settings.generate_spec
            else fit_spec
        )
        self.data = sbc_design(fit_spec, settings.design)
        self.model = _refittable(fit_spec, self.data)
        gen_data = self.data if gen_spec is fit_spec else sbc_design(gen_spec, settings.design)
        self.gen_model = _refittable(gen_spec, gen_data)
        _check_same_parameters(self.model, self.gen_model)
        # Every observed variable is drawn afresh, and swapped in through its data container.
        self.observed = [rv.name for rv in self.gen_model.observed_RVs]
        self.containers = _containers(self.model)
        self.quantities = quantity_labels(self.model)
        self.sampler = SamplerSettings(
            chains=settings.chains,
            draws=settings.draws,
            tune=settings.tune,
            target_accept=settings.target_accept,
            backend=settings.backend,
            progressbar=False,
        )
        mode = settings.backend.upper()
        # prior draws: every free RV, the deterministics of the estimands, and the outcome
        names = [rv.name for rv in self.gen_model.free_RVs]
        names += [v for _, v, _ in self.quantities if v not in names]
        names += self.observed
        self.draw_names = names
        outputs = [self.gen_model[n] for n in names]
        with (
            warnings.catch_warnings(),
            pytensor.config.change_flags(mode=mode, **COMPILE_FLAGS),
        ):
            warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
            self._draw = pm_compile(inputs=[], outputs=outputs, random_seed=0, mode=mode)
            self._rngs = find_rng_nodes(outputs)
            self.compiled = compile_for_refit(self.model, self.sampler)
            # log p(y | theta) summed; it reads y from the data containers of its own model copy
            self._umodel, self._loglik, self._free = compile_log_density(
                self.model, self.observed, mode, total=True
            )

    def draw_prior(self, seed: int) -> dict[str, np.ndarray]:
        from pymc.pytensorf import reseed_rngs

        reseed_rngs(self._rngs, seed)
        values = self._draw()
        return {n: np.asarray(v) for n, v in zip(self.draw_names, values, strict=True)}

    def loglik(self, point: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> float:
        for name, value in data.items():
            self._umodel.set_data(name, value)
        return float(self._loglik(*(point[n] for n in self._free)))

    def run(self, index: int) -> dict[str, Any]:
        from alliance_bayes.inference import sample_compiled

        s = self.settings
        prior_seed, sample_seed, tie_seed = replicate_seeds(s.seed, index)
        truth = self.draw_prior(prior_seed)
        y = {
            self.containers[n]: truth[n].astype(self.model[self.containers[n]].dtype)
            for n in self.observed
        }
        cores = max(1, (os.cpu_count() or 1) // max(1, _WORKERS_HINT))
        dt, seconds = sample_compiled(
            self.compiled, self.sampler, data=y, seed=sample_seed, cores=cores
        )
        post = dt["posterior"].to_dataset()
        draws_of = {label: _quantity_draws(post, var, sel) for label, var, sel in self.quantities}
        stride, ess_min = thinning_stride(list(draws_of.values()), s.thin_to, s.thinning)
        thinned = post.isel(draw=slice(stride - 1, None, stride))
        flat = thinned.stack(sample=("chain", "draw"))
        n_draws = int(flat.sizes["sample"])
        rng = np.random.default_rng(tie_seed)
        ranks: dict[str, int] = {}
        pits: dict[str, float] = {}
        true_values: dict[str, float] = {}
        post_means: dict[str, float] = {}

        def record(label: str, draws: np.ndarray, true: float) -> None:
            less = int(np.sum(draws < true))
            ties = int(np.sum(draws == true))
            rank = less + int(rng.integers(0, ties + 1))
            ranks[label] = rank
            pits[label] = (rank + float(rng.uniform())) / (n_draws + 1)
            true_values[label] = float(true)
            post_means[label] = float(np.mean(draws))

        dims_of = self.model.named_vars_to_dims
        for label, var, sel in self.quantities:
            draws = flat[var].sel(sel).to_numpy().ravel() if sel else flat[var].to_numpy().ravel()
            true = _select(truth[var], dims_of.get(var, ()), self.model.coords, sel)
            record(label, draws, true)
        # the log-likelihood of this replicate's data (Modrák et al. 2023)
        ll_true = self.loglik(truth, y)
        ll_post = np.array(
            [
                self.loglik({n: flat[n].isel(sample=k).to_numpy() for n in self._free}, y)
                for k in range(n_draws)
            ]
        )
        record(LOGLIK, ll_post, ll_true)
        stats_ = dt["sample_stats"]
        divergent = int(stats_["diverging"].sum()) if "diverging" in stats_ else -1
        return {
            "replicate": index,
            "seeds": {"prior": prior_seed, "sampler": sample_seed, "tie_break": tie_seed},
            "n_draws": n_draws,
            "thin_stride": stride,
            "ess_min": ess_min,
            "rank": ranks,
            "pit": pits,
            "truth": true_values,
            "posterior_mean": post_means,
            "divergences": divergent,
            "max_rhat": _max_rhat(post, [v for _, v, _ in self.quantities]),
            "sample_seconds": seconds,
        }


_WORKERS_HINT = 1  # set in each worker process: nutpie threads = cores // workers


def _quantity_draws(post, var: str, sel: dict[str, str]) -> np.ndarray:
    """One quantity's draws shaped (chain, draw)."""
    da = post[var].sel(sel) if sel else post[var]
    return np.asarray(da.transpose("chain", "draw").values, float)


def thinning_stride(
    draws: Sequence[np.ndarray], thin_to: int, thinning: str = "ess"
) -> tuple[int, float]:
    r"""Stride within each chain, and the smallest ESS it was set from, for ranks of a replicate.

    The rank of the truth among :math:`L` draws is uniform only if the draws are independent;
    autocorrelated draws spread the ranks towards the ends (Talts et al. 2018, arXiv:1804.06788,
    who thin to about the effective sample size). So each replicate's chains are thinned until
    about one draw per effective draw is left: with :math:`N` draws in all and :math:`E` the
    smallest bulk or tail ESS (Vehtari et al. 2021, doi:10.1214/20-BA1221) over the ranked
    quantities ``draws`` (each (chain, draw)), the stride is
    :math:`\max(\lceil N / E \rceil, \lfloor N / L_{max} \rfloor)`, :math:`L_{max}` = ``thin_to``,
    so that :math:`L \approx \min(E, L_{max})`, at most one draw per chain fewer. :math:`L` thus
    varies between replicates; the fractional ranks :math:`(r + U)/(L + 1)` are uniform whatever
    it is, and each replicate records it (``n_draws``). The tail ESS counts because a rank is
    decided as much in the tails as in the bulk. The log-likelihood is not among ``draws`` (it
    would need evaluating at every draw): a smooth function of all parameters, its ESS is seldom
    the smallest. ``thinning = "fixed"`` is the earlier rule, :math:`\lfloor N / L_{max} \rfloor`
    whatever the ESS, kept so that runs recorded with it read back unchanged.
    """
    total = int(np.prod(draws[0].shape[:2])) if draws else 0
    fixed = max(1, total // thin_to) if total else 1
    if thinning == "fixed" or not draws:
        return fixed, float("nan")
    if thinning != "ess":
        raise SBCError(f"thinning must be 'ess' or 'fixed', not {thinning!r}")
    from alliance_bayes.rank_diagnostics import rank_diagnostics

    diag = rank_diagnostics(
        np.stack([np.asarray(d, float) for d in draws], axis=-1),
        statistics=("ess_bulk", "ess_tail"),
    )
    ess = np.concatenate([diag.ess_bulk, diag.ess_tail])
    ess = ess[np.isfinite(ess)]  # a constant quantity (an empty cell) has none
    ess_min = float(ess.min()) if ess.size else float(total)
    per_chain = draws[0].shape[1]
    stride = max(fixed, int(np.ceil(total / max(ess_min, 1.0))))
    return min(stride, per_chain), ess_min


def _select(value: np.ndarray, dims: Sequence[str], coords: dict, sel: dict[str, str]) -> float:
    index = tuple(list(coords[d]).index(sel[d]) for d in dims)
    return float(np.asarray(value)[index]) if dims else float(value)


def _max_rhat(post, variables: list[str]) -> float:
    if post.sizes["chain"] < 2:
        return float("nan")
    from alliance_bayes.rank_diagnostics import dataset_diagnostics

    values = dataset_diagnostics(post[sorted(set(variables))], statistics=("r_hat",))["r_hat"]
    return float(max(np.nanmax(values[v].to_numpy()) for v in values.data_vars))


def _refittable(spec: ModelSpec, data):
    from alliance_bayes.model.families import family_of

    family = family_of(spec)
    return (family.build_refit or family.build)(spec, data)


def _containers(model) -> dict[str, str]:
    """Observed variable → the name of the data container holding its values."""
    out = {}
    for rv in model.observed_RVs:
        value = model.rvs_to_values[rv]
        # PyMC casts an integer container to the variable's dtype: look through the cast
        while value.name not in model.named_vars and value.owner and len(value.owner.inputs) == 1:
            value = value.owner.inputs[0]
        if value.name not in model.named_vars or value is not model[value.name]:
            raise SBCError(f"observed variable {rv.name!r} is not held in a data container")
        out[rv.name] = value.name
    return out


def _check_same_parameters(fit_model, gen_model) -> None:
    a = {rv.name: fit_model.named_vars_to_dims.get(rv.name) for rv in fit_model.free_RVs}
    b = {rv.name: gen_model.named_vars_to_dims.get(rv.name) for rv in gen_model.free_RVs}
    if a != b:
        raise SBCError(f"generating and fitting models differ in their parameters: {a} vs {b}")


def _worker_for(settings_dict: dict) -> _Worker:
    """This process's worker for these settings, compiled on its first task only."""
    from alliance_bayes.sweeps import worker_cache

    key = "sbc:" + json.dumps(settings_dict, sort_keys=True, default=str)
    return worker_cache(key, lambda: _Worker(SBCSettings.from_dict(settings_dict)))


def _run_replicate(settings_dict: dict, index: int, workers: int) -> dict:
    """One replicate's record (a task: runs in whichever worker process the executor picks)."""
    global _WORKERS_HINT
    _WORKERS_HINT = workers
    t = time.perf_counter()
    record = _worker_for(settings_dict).run(index)
    record["seconds"] = time.perf_counter() - t
    return record


def _replicate_path(folder: Path, index: int) -> Path:
    return folder / f"rep-{index:05d}.json"


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


# --- the run ------------------------------------------------------------------------------------


def run_sbc(
    settings: SBCSettings,
    out: str | Path,
    *,
    workers: int = 1,
    dask: str | None = None,
    log: Callable[[str], None] | None = None,
) -> CheckResult:
    """Run (or resume, or extend) an SBC in ``out`` and summarise it (:func:`summarise`).

    Returns the summary's :class:`~alliance_bayes.checks.base.CheckResult`, with how many
    replicates were run now in ``details["replicates_run"]``.

    Replicates already in ``out/replicates`` are skipped. ``out/sbc.json`` records the settings; a
    folder whose settings differ (other than the replicate count) is refused, so that replicates of
    different runs are never mixed. With ``workers > 1`` or ``dask`` the replicates are tasks of an
    executor (:func:`alliance_bayes.sweeps.executor`: local processes, or dask.distributed with
    ``dask="local"`` or a scheduler address); each worker process compiles the model on its first
    task and keeps it. A replicate's seeds depend on its index only, so every executor gives the
    same ranks.
    """
    out = Path(out)
    (out / REPLICATES_DIR).mkdir(parents=True, exist_ok=True)
    _claim_folder(settings, out)
    folder = out / REPLICATES_DIR
    todo = [i for i in range(settings.replicates) if not _replicate_path(folder, i).is_file()]
    say = log or (lambda _msg: None)
    say(f"SBC {settings.spec}: {settings.replicates - len(todo)} done, {len(todo)} to run")
    if not todo:
        return summarise(out, replicates_run=0)
    from alliance_bayes.sweeps import run_tasks

    workers = max(1, min(workers, len(todo)))
    settings_dict = settings.to_dict()
    run_tasks(
        _run_replicate,
        [(settings_dict, i, workers) for i in todo],
        workers=workers,
        dask=dask,
        # Written as each finishes: an interrupted run keeps every finished replicate.
        on_result=lambda k, record: _write_json(_replicate_path(folder, todo[k]), record),
    )
    return summarise(out, replicates_run=len(todo))


def _claim_folder(settings: SBCSettings, out: Path) -> None:
    path = out / "sbc.json"
    fit_spec = load_spec(settings.spec, likelihood_form="per_client")
    data = sbc_design(fit_spec, settings.design)
    record = {
        "settings": settings.to_dict(),
        "fit_spec": fit_spec.to_dict(),
        "n_clients": data.n_clients,
        "n_providers": len(data.provider_type_index),
    }
    if settings.generate_spec:
        record["generate_spec"] = load_spec(
            settings.generate_spec, likelihood_form="per_client"
        ).to_dict()
    record = json.loads(json.dumps(record))  # as it reads back (tuples become lists)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        old_settings = SBCSettings.from_dict(old["settings"])
        keys = ("fit_spec", "generate_spec", "n_clients")
        same_specs = all(old.get(k) == record.get(k) for k in keys)
        if old_settings.identity() != settings.identity() or not same_specs:
            raise SBCError(
                f"{out} holds an SBC run with other settings or specs; use another folder "
                f"(old: {old['settings']}, new: {record['settings']})"
            )
    _write_json(path, record)


# --- analysis -----------------------------------------------------------------------------------


def load_replicates(out: str | Path) -> pd.DataFrame:
    """One row per finished replicate: ``rank:<q>``, ``pit:<q>``, and run diagnostics."""
    rows = []
    for path in sorted((Path(out) / REPLICATES_DIR).glob("rep-*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        row = {
            "replicate": rec["replicate"],
            "n_draws": rec["n_draws"],  # L, the number of draws the truth is ranked among
            "thin_stride": rec.get("thin_stride", float("nan")),
            "ess_min": rec.get("ess_min", float("nan")),
            "divergences": rec["divergences"],
            "max_rhat": rec["max_rhat"],
            "seconds": rec["seconds"],
            "sample_seconds": rec["sample_seconds"],
        }
        row.update({f"rank:{k}": v for k, v in rec["rank"].items()})
        row.update({f"pit:{k}": v for k, v in rec["pit"].items()})
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values("replicate").reset_index(drop=True)


def _pit_columns(table: pd.DataFrame) -> list[str]:
    return [c.split(":", 1)[1] for c in table.columns if c.startswith("pit:")]


@lru_cache(maxsize=32)
def _null_min_tail(n: int, n_sims: int = 4000, seed: int = 20220322) -> np.ndarray:
    """Null distribution of the smallest pointwise two-sided tail probability of an ECDF of ``n``
    uniform values on the grid ``k/n`` (Säilynoja et al. 2022), sorted."""
    rng = np.random.default_rng(seed)
    z = np.arange(1, n) / n
    sims = np.sort(rng.uniform(size=(n_sims, n)), axis=1)
    counts = np.stack([np.searchsorted(s, z, side="right") for s in sims])
    return np.sort(_min_tail(counts, n, z))


def _min_tail(counts: np.ndarray, n: int, z: np.ndarray) -> np.ndarray:
    lower = stats.binom.cdf(counts, n, z)
    upper = stats.binom.sf(counts - 1, n, z)
    return np.minimum(1.0, 2 * np.minimum(lower, upper)).min(axis=-1, initial=1.0)


def ecdf_band(n: int, prob: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid ``z`` and the simultaneous ``prob`` band (lower, upper) of the ECDF of ``n`` uniforms.

    The band is the pointwise binomial band at the level ``gamma`` whose union covers a whole null
    ECDF with probability ``prob``, found by simulation (Säilynoja et al. 2022).
    """
    z = np.arange(1, n) / n
    gamma = float(np.quantile(_null_min_tail(n), 1 - prob))
    lower = stats.binom.ppf(gamma / 2, n, z) / n
    upper = stats.binom.ppf(1 - gamma / 2, n, z) / n
    return z, lower, upper


def uniformity(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Uniformity tests of each quantity's fractional ranks.

    Columns: ``n`` (replicates), ``chi2_p`` (chi-square on equal-width bins, about 10 per bin, at
    least 4 bins), ``ecdf_p`` (Säilynoja et al. 2022 simultaneous-band test), ``in_band`` (the ECDF
    stays inside the simultaneous ``1 - alpha`` band), ``mean_pit`` and ``sd_pit`` (0.5 and 0.289
    under uniformity; a low SD means the posterior is too wide, a high one too narrow), and
    ``calibrated`` (neither p-value below ``alpha`` divided by the number of tests: two per quantity,
    Bonferroni, so that the family-wise false alarm rate of a calibrated model stays at ``alpha``).
    """
    quantities = _pit_columns(table)
    rows = []
    for q in quantities:
        u = table[f"pit:{q}"].dropna().to_numpy(float)
        n = len(u)
        bins = max(4, min(20, n // 10))
        observed = np.histogram(u, bins=bins, range=(0.0, 1.0))[0]
        chi2_p = float(stats.chisquare(observed).pvalue)
        z = np.arange(1, n) / n
        counts = np.searchsorted(np.sort(u), z, side="right")
        stat = float(_min_tail(counts[None, :], n, z)[0])
        null = _null_min_tail(n)
        ecdf_p = float((np.searchsorted(null, stat, side="right") + 1) / (len(null) + 1))
        rows.append(
            {
                "quantity": q,
                "n": n,
                "chi2_p": chi2_p,
                "ecdf_p": ecdf_p,
                "in_band": ecdf_p > alpha,
                "mean_pit": float(np.mean(u)),
                "sd_pit": float(np.std(u)),
            }
        )
    result = pd.DataFrame(rows)
    if len(result):
        threshold = alpha / (2 * len(result))
        result["calibrated"] = (result["chi2_p"] >= threshold) & (result["ecdf_p"] >= threshold)
    return result


def all_calibrated(result: pd.DataFrame) -> bool:
    """The run's verdict: every quantity passes its Bonferroni-corrected uniformity tests."""
    return bool(result["calibrated"].all())


def plot_ecdf_difference(table: pd.DataFrame, path: str | Path, prob: float = 0.95) -> Path:
    """ECDF-difference plot of each quantity's fractional ranks with its simultaneous band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quantities = _pit_columns(table)
    ncol = min(4, len(quantities))
    nrow = int(np.ceil(len(quantities) / ncol))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(3.2 * ncol, 2.5 * nrow), sharex=True, sharey=True, squeeze=False
    )
    tests = uniformity(table, alpha=1 - prob).set_index("quantity")
    for ax, q in zip(axes.ravel(), quantities, strict=False):
        u = np.sort(table[f"pit:{q}"].dropna().to_numpy(float))
        n = len(u)
        z, lower, upper = ecdf_band(n, prob)
        ecdf = np.searchsorted(u, z, side="right") / n
        ax.fill_between(z, lower - z, upper - z, color="0.85", step="mid", lw=0)
        colour = "C0" if tests.loc[q, "in_band"] else "C3"
        ax.step(z, ecdf - z, where="mid", color=colour, lw=1.2)
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_title(
            f"{q}\nECDF p={tests.loc[q, 'ecdf_p']:.2f}, χ² p={tests.loc[q, 'chi2_p']:.2f}",
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(quantities) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("fractional rank", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("ECDF − uniform", fontsize=8)
    n_reps = len(table)
    fig.suptitle(
        f"SBC: ECDF difference of {n_reps} replicates, simultaneous {prob:.0%} band "
        "(Säilynoja et al. 2022)",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def summarise(out: str | Path, alpha: float = 0.05, *, replicates_run: int = 0) -> CheckResult:
    """Write ``ranks.csv``, ``uniformity.csv``, ``ecdf_difference.png`` and ``summary.md`` in ``out``.

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` that passed when every quantity is
    calibrated (:func:`all_calibrated`): the uniformity table, ``summary.md``'s text, ``out``, and
    in ``details`` the ranks (``"ranks"``), the figure (``"plot"``) and ``"replicates_run"``.
    """
    out = Path(out)
    table = load_replicates(out)
    if table.empty:
        raise SBCError(f"{out}: no finished replicate")
    record = json.loads((out / "sbc.json").read_text(encoding="utf-8"))
    settings = SBCSettings.from_dict(record["settings"])
    table.to_csv(out / "ranks.csv", index=False)
    result = uniformity(table, alpha)
    result.to_csv(out / "uniformity.csv", index=False)
    plot = plot_ecdf_difference(table, out / "ecdf_difference.png", prob=1 - alpha)
    verdict = all_calibrated(result)
    lines = [
        f"# SBC of `{settings.spec}`",
        "",
        f"- generating prior: `{settings.generate_spec or settings.spec}`",
        f"- replicates finished: {len(table)} of {settings.replicates}",
        f"- design: {dataclasses.asdict(settings.design)} → {_clients(table, record)}",
        f"- sampler: nutpie, {settings.chains} chains × {settings.draws} draws "
        f"(tune {settings.tune}, target_accept {settings.target_accept}), {_thinning(table, settings)}",
        f"- seconds per replicate (one worker): median {table['seconds'].median():.1f}, "
        f"mean {table['seconds'].mean():.1f}",
        f"- replicates with divergences: {int((table['divergences'] > 0).sum())}; "
        f"max R-hat > 1.01: {int((table['max_rhat'] > 1.01).sum())}",
        f"- verdict (Bonferroni over {2 * len(result)} tests, 2 per quantity, α = {alpha}): "
        f"**{'calibrated' if verdict else 'NOT calibrated'}**",
        "",
        "| quantity | n | χ² p | ECDF p | in 95% band | mean PIT | SD PIT |",
        "| --- | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for r in result.itertuples():
        lines.append(
            f"| {r.quantity} | {r.n} | {r.chi2_p:.3f} | {r.ecdf_p:.3f} | "
            f"{'yes' if r.in_band else 'no'} | {r.mean_pit:.3f} | {r.sd_pit:.3f} |"
        )
    lines += [
        "",
        f"![ECDF difference]({plot.name})",
        "",
        "Ranks of the true value among thinned posterior draws (Talts et al. 2018); the "
        "log-likelihood `loglik` is the Modrák et al. (2023) data-dependent test quantity. "
        "Uniform PIT: mean 0.5, SD 0.289.",
        "",
    ]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text, encoding="utf-8")
    details = {"ranks": table, "plot": plot, "replicates_run": replicates_run}
    return CheckResult("sbc", verdict, result, text, out, details)


def _thinning(table: pd.DataFrame, settings: SBCSettings) -> str:
    n = table["n_draws"]
    if settings.thinning == "fixed":
        return f"thinned to {int(n.iloc[0])} draws per replicate whatever their ESS"
    return (
        f"thinned to about the smallest ESS (at most {settings.thin_to}): ranks among L = "
        f"{int(n.min())}–{int(n.max())} draws per replicate (median {n.median():.0f})"
    )


def _clients(table: pd.DataFrame, record: dict) -> str:
    return f"{record.get('n_clients')} clients, {record.get('n_providers')} providers"
