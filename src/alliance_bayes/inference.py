"""Sampling: prior predictive, NUTS, posterior predictive, log-likelihood and log-prior in one DataTree.

This is the only module that calls :func:`pymc.sample`. The sampler, its computational backend and the
seed are always explicit and are returned with the timings, so that every run records them.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from unittest import mock

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import xarray as xr
from pymc.model.transform.conditioning import remove_value_transforms

from alliance_bayes.compiled_wrappers import cached_wrappers
from alliance_bayes.spec import SamplerSpec

PREDICTIVE_DRAWS_PER_CHAIN = 250
#: The observed variable whose prior predictive draws are kept: the first outcome, which the prior
#: predictive check shows. Every parameter and deterministic is drawn too (prior estimands, prior
#: sensitivity); other observed variables are not, since no check reads them and the latent model's
#: rating counts (a multinomial per membership and subscale) cost most of its prior draws' time.
PRIOR_PREDICTIVE_OUTCOME = "y"
# With numba's fastmath on, a model loaded from PyTensor's on-disk cache is numerically different
# from a fresh compile (separately cached pieces are re-associated differently), so the same seed gave
# different draws depending on whether the cache was warm. Measured: cold and warm runs each reproduce
# themselves but disagree; with fastmath off they agree and the cache still saves the compile time.
REPRODUCIBLE_COMPILE = {"numba__fastmath": False}
# PyTensor records the Python stack for every graph node it creates, for its error messages; the
# default model's rewrites create about 45,000 nodes, and recording them took about 0.8 s of each
# warm compile. The traces would point into this package's model code, not a user's.
COMPILE_FLAGS = {**REPRODUCIBLE_COMPILE, "traceback__limit": 0}
#: How the functions run once after sampling (prior and posterior predictive draws, the pointwise
#: log densities) are compiled: PyTensor's FAST_COMPILE mode with no C compiler, so that every node
#: runs as NumPy and nothing is compiled. They see a few hundred calls on blocks of draws, where
#: NumPy is as fast as compiled code, while compiling them with the sampler's backend (numba) took
#: about 45 of the default fit's 111 s on an empty compile cache (docs/benchmarks.md). The draws
#: and densities are the same to 1e-15 (the random streams are NumPy's in both). The sampler's
#: gradient, called millions of times, keeps its backend. (The C compiler is switched off only
#: here: with none, PyTensor also caps elementwise fusion at 32 operands in every mode, numba's
#: included, which changed the latent model's compiled gradient.)
AUXILIARY_MODE = "FAST_COMPILE"


@contextmanager
def auxiliary_compilation() -> Iterator[None]:
    """Compile the post-sampling functions in :data:`AUXILIARY_MODE`, with no C compiler."""
    with pytensor.config.change_flags(mode=AUXILIARY_MODE, cxx="", **COMPILE_FLAGS):
        yield


@contextmanager
def initial_points_without_c() -> Iterator[None]:
    """Build PyMC's initial-point functions (FAST_COMPILE, with a scan for the LKJ priors), which
    nutpie calls a few times, with no C compiler: gcc compiled them in about 10 s of a cold default
    fit (docs/benchmarks.md). The same initial points either way."""
    import pymc.initial_point as initial_point

    original = initial_point.compile

    def compile_without_c(*args, **kwargs):
        with pytensor.config.change_flags(cxx=""):
            return original(*args, **kwargs)

    with mock.patch.object(initial_point, "compile", compile_without_c):
        yield


@dataclass(frozen=True)
class SamplerSettings(SamplerSpec):
    """What one run of the sampler uses: a spec's ``[sampler]`` table plus run-time choices."""

    progressbar: bool = True
    # Chains run in parallel on this many threads (None: every CPU this process may use). Passed
    # explicitly because PyMC's default assumes half the CPUs are hyper-threads (cpu_count() // 2):
    # on a 2-core machine it ran the chains one after another, at half the possible speed.
    cores: int | None = None

    @property
    def sampler(self) -> str:
        return self.name

    @property
    def chain_cores(self) -> int:
        """Threads the chains run on: ``cores`` (or every available CPU), at most one per chain."""
        return max(1, min(self.chains, self.cores or available_cores()))

    @classmethod
    def from_spec(cls, spec: SamplerSpec, **overrides) -> SamplerSettings:
        """Settings from a spec's ``[sampler]`` table, with CLI overrides (``None`` = keep)."""
        values = {**asdict(spec), **{k: v for k, v in overrides.items() if v is not None}}
        if "sampler" in values:
            values["name"] = values.pop("sampler")
        return cls(**values)

    def to_dict(self) -> dict:
        return {**asdict(self), "cores": self.chain_cores}


def available_cores() -> int:
    """CPUs this process may run on (the affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def interrupts_recorded() -> Iterator[list[int]]:
    """Record every Ctrl-C (SIGINT) while the block runs, and still raise ``KeyboardInterrupt``.

    The samplers catch ``KeyboardInterrupt`` to return the draws so far (PyMC's nutpie path does),
    so a fit interrupted mid-sampling went on with a partial posterior and was reported as a
    convergence failure. The caller checks the returned list after the sampler returns and stops.
    Outside the main thread (where signal handlers cannot be set) nothing is recorded.
    """
    hits: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        hits.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


class ProgressLines:
    """Sampling progress as a log line every :attr:`interval` seconds, for a log file or a pipe.

    PyMC draws nutpie's progress as a live terminal bar, which prints nothing when stderr is not a
    terminal (``nohup``, ``| tee``, a batch job), so a long fit was silent. This takes the bar's
    place (same constructor and ``update(chain_progresses)`` callback) and writes draws done, the
    divergences so far and an estimate of the time left from the rate so far.
    """

    interval = 10.0

    def __init__(self, chains: int, draws: int, *args, **kwargs):
        self._start = self._last = time.monotonic()

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, chain_progresses) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        done = sum(int(cp.finished_draws) for cp in chain_progresses)
        total = sum(int(cp.total_draws) for cp in chain_progresses)
        divergences = sum(len(cp.divergent_draws) for cp in chain_progresses)
        elapsed = now - self._start
        left = f"about {elapsed * (total - done) / done:.0f} s left" if done else "starting"
        _phase(
            f"sampling: {done} of {total} draws (tuning included), {divergences} divergences, "
            f"{elapsed:.0f} s, {left}"
        )


def _phase(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sample_model(
    model: pm.Model, settings: SamplerSettings, *, draws_only: bool = False
) -> tuple[xr.DataTree, dict[str, float]]:
    """Run the full sampling workflow on ``model``.

    ``draws_only`` skips the prior and posterior predictive draws and the log densities (a refit
    whose draws are pooled with others needs none of them).

    Independent seeds for the prior predictive, the sampler and the posterior predictive are spawned
    from ``settings.seed`` with :class:`numpy.random.SeedSequence`, so that the same seed, data and
    spec give the same draws on the same machine.

    Returns
    -------
    dt : xarray.DataTree
        Groups posterior, sample_stats, prior, prior_predictive, posterior_predictive,
        log_likelihood, log_prior, observed_data and constant_data.
    timings : dict
        Wall seconds: ``prior_predictive``, ``sample`` (compile + sampling), ``sampling`` (the
        sampler's own clock, draws only), ``compile`` (the difference), ``posterior_predictive``,
        ``log_density`` and ``total``.
    """
    # On a terminal the sampler draws its own bar; elsewhere ProgressLines logs instead, and each
    # phase after sampling says when it is done.
    # (A notebook is not a terminal either, but draws the bar itself.)
    lines = settings.progressbar and not sys.stderr.isatty() and "ipykernel" not in sys.modules
    say = _phase if settings.progressbar else (lambda message: None)
    seeds = np.random.SeedSequence(settings.seed).generate_state(3)
    prior_seed, sample_seed, ppc_seed = (int(s) for s in seeds)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with (
        interrupts_recorded() as interrupted,
        model,
        pytensor.config.change_flags(mode=settings.backend.upper(), **COMPILE_FLAGS),
        warnings.catch_warnings(),
        ExitStack() as patches,
    ):
        if lines and settings.sampler == "nutpie":
            import pymc.sampling.mcmc

            if hasattr(pymc.sampling.mcmc, "NutpieProgressBarManager"):
                patches.enter_context(
                    mock.patch.object(pymc.sampling.mcmc, "NutpieProgressBarManager", ProgressLines)
                )
        if settings.sampler == "nutpie":
            patches.enter_context(cached_wrappers())
        patches.enter_context(initial_points_without_c())
        # The only Potential in these models is a collapsed likelihood, which prior draws must ignore.
        warnings.filterwarnings("ignore", message="The effect of Potentials on other parameters")
        t = time.perf_counter()
        prior = None
        if not draws_only:
            drawn = [
                *(rv.name for rv in model.free_RVs),
                *(v.name for v in model.deterministics),
                *(rv.name for rv in model.observed_RVs if rv.name == PRIOR_PREDICTIVE_OUTCOME),
            ]
            with auxiliary_compilation():
                prior = pm.sample_prior_predictive(
                    draws=settings.prior_draws, var_names=drawn, random_seed=prior_seed
                )
            timings["prior_predictive"] = time.perf_counter() - t
            say(
                f"prior predictive draws: {timings['prior_predictive']:.0f} s; compiling and sampling"
            )

        t = time.perf_counter()
        dt = pm.sample(
            draws=settings.draws,
            tune=settings.tune,
            chains=settings.chains,
            cores=settings.chain_cores,
            random_seed=sample_seed,
            nuts_sampler=settings.sampler,
            nuts={"target_accept": settings.target_accept},
            progressbar=settings.progressbar and (not lines or settings.sampler == "nutpie"),
            compute_convergence_checks=False,  # our own gate (diagnostics.py) decides
            backend=settings.backend,
        )
        timings["sample"] = time.perf_counter() - t
        if interrupted:  # the sampler swallowed a Ctrl-C and returned a partial posterior
            raise KeyboardInterrupt("interrupted during sampling")
        sampling = dt["posterior"].attrs.get("sampling_time")
        timings["sampling"] = float(sampling) if sampling is not None else timings["sample"]
        timings["compile"] = max(timings["sample"] - timings["sampling"], 0.0)
        say(
            f"sampling: done ({timings['compile']:.0f} s compile, {timings['sampling']:.0f} s draws)"
        )

        # A model whose likelihood is a Potential (collapsed) has no observed variable: its
        # predictive draws and pointwise log-likelihood come from its family afterwards.
        observed = bool(model.observed_RVs)
        if not draws_only and observed:
            t = time.perf_counter()
            # A few hundred replicates per chain are plenty for predictive checks; all draws would
            # make posterior.nc hundreds of MB for the full study.
            thin = max(1, settings.draws // PREDICTIVE_DRAWS_PER_CHAIN)
            # With the constant data, so that PyMC sees that no data container upstream of a
            # parameter (e.g. the intercept prior's centre) has changed since sampling.
            groups = {"posterior": dt["posterior"].isel(draw=slice(None, None, thin))}
            if "constant_data" in dt.children:
                groups["constant_data"] = dt["constant_data"]
            thinned = xr.DataTree.from_dict(groups)
            with auxiliary_compilation():
                ppc = pm.sample_posterior_predictive(
                    thinned, random_seed=ppc_seed, progressbar=False
                )
            dt["posterior_predictive"] = ppc["posterior_predictive"]
            timings["posterior_predictive"] = time.perf_counter() - t
            say(f"posterior predictive draws: {timings['posterior_predictive']:.0f} s")

        if not draws_only:
            t = time.perf_counter()
            posterior = dt["posterior"].to_dataset()
            # One compiled function for the likelihood and the priors.
            likelihood = model.observed_RVs if observed else []
            with auxiliary_compilation():
                density = log_density(
                    model, posterior, [*likelihood, *model.free_RVs], AUXILIARY_MODE
                )
            if likelihood:
                # float32 halves the largest group (draws x clients) at no cost to LOO's precision.
                names = [rv.name for rv in likelihood]
                dt["log_likelihood"] = density[names].astype("float32")
            # Each variable's log prior summed over its own dimensions: the per-draw totals are what
            # prior power-scaling uses, and the pointwise terms (draws x providers) were 15% of the file.
            log_prior = density[[rv.name for rv in model.free_RVs]]
            dt["log_prior"] = log_prior.map(
                lambda da: da.sum([d for d in da.dims if d not in ("chain", "draw")])
            )
            timings["log_density"] = time.perf_counter() - t
            say(f"log-likelihood and log prior: {timings['log_density']:.0f} s")

    for group in ("prior", "prior_predictive"):
        if prior is not None and group in prior.children:
            dt[group] = prior[group]
    for group in [g for g in dt.children if g.startswith("warmup")]:
        del dt[group]
    timings["total"] = time.perf_counter() - start
    return dt, timings


def log_density(model: pm.Model, posterior: xr.Dataset, rvs, backend: str) -> xr.Dataset:
    """Elementwise log densities of ``rvs`` at every posterior draw, one variable per RV.

    PyMC's own ``compute_log_likelihood`` fails on models with an ``LKJCorr`` prior (its untransformed
    value variable is renamed ``<name>_cholesky``), so this maps posterior names to value variables
    itself. Densities are on the constrained scale, as ``compute_log_likelihood`` reports them.
    """
    return log_density_function(model, rvs, backend)(posterior)


def compile_log_density(
    model: pm.Model,
    names: Sequence[str],
    mode: str,
    *,
    total: bool = False,
    batched: bool = False,
) -> tuple[pm.Model, Callable[..., Any], list[str]]:
    """The log densities of the variables ``names`` as one compiled function of the free RVs'
    values on the constrained scale (the scale the posterior reports).

    With ``batched=True`` every argument gains a leading axis of draws and so does every output
    (the graph is vectorised with :func:`pytensor.graph.replace.vectorize_graph`): one call
    evaluates a block of draws instead of one Python call per draw.

    Returns the untransformed copy of the model whose data containers the function reads (set
    data there), the function (elementwise densities per variable, or their sum with
    ``total=True``) and the free RVs' names in the order of its arguments.
    """
    umodel = remove_value_transforms(model)
    free = [(rv.name, umodel.rvs_to_values[rv]) for rv in umodel.free_RVs]
    inputs = [value for _, value in free]
    outs = umodel.logp(vars=[umodel[name] for name in names], sum=total)
    if batched:
        from pytensor.graph.replace import vectorize_graph

        stacked = [
            pt.tensor(dtype=v.dtype, shape=(None, *v.type.shape), name=v.name) for v in inputs
        ]
        outs = vectorize_graph(outs, replace=dict(zip(inputs, stacked, strict=True)))
        inputs = stacked
    fn = umodel.compile_fn(
        inputs=inputs, outs=outs, on_unused_input="ignore", point_fn=False, mode=mode.upper()
    )
    return umodel, fn, [name for name, _ in free]


#: Draws per call of a batched log density: bounds its working memory to a few hundred MB for
#: ten thousand clients, and is past the point where the per-call overhead matters.
LOG_DENSITY_BLOCK = 256


def log_density_function(model: pm.Model, rvs, backend: str) -> Callable[[xr.Dataset], xr.Dataset]:
    """:func:`log_density` compiled once, for many posteriors of the same model (K-fold refits).

    One vectorised call per block of :data:`LOG_DENSITY_BLOCK` draws instead of one Python call
    per draw.
    """
    _, fn, free = compile_log_density(model, [rv.name for rv in rvs], backend, batched=True)
    dims = model.named_vars_to_dims

    def evaluate(posterior: xr.Dataset) -> xr.Dataset:
        n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
        n = n_chains * n_draws
        flat = [posterior[name].values.reshape(n, *posterior[name].shape[2:]) for name in free]
        step = LOG_DENSITY_BLOCK
        blocks = [fn(*(x[i : i + step] for x in flat)) for i in range(0, n, step)]
        out = [np.concatenate([b[k] for b in blocks]) for k in range(len(rvs))]
        data = {
            rv.name: (
                ("chain", "draw", *dims.get(rv.name, ())),
                arr.reshape(n_chains, n_draws, *arr.shape[1:]),
            )
            for rv, arr in zip(rvs, out, strict=True)
        }
        return xr.Dataset(data, coords={**posterior.coords, **_used_coords(model, data)})

    return evaluate


def _used_coords(model: pm.Model, data: dict) -> dict:
    used = {dim for _, (dims, _) in data.items() for dim in dims[2:]}
    return {dim: list(model.coords[dim]) for dim in used if model.coords.get(dim) is not None}


# --- compile once, refit many times (SBC; K-fold) ---------------------------------------------------


def compile_for_refit(model: pm.Model, settings: SamplerSettings):
    """Compile ``model`` once with nutpie so that it can be refitted to new data without recompiling.

    Data containers (``pm.Data``, e.g. ``y_observed``) stay shared variables (``freeze_model=False``),
    so :func:`sample_compiled` can swap them with ``CompiledModel.with_data``. Only the nutpie
    sampler supports this; ``settings.sampler`` must be ``"nutpie"``.
    """
    import nutpie

    if settings.sampler != "nutpie":
        raise ValueError(
            f"refitting a compiled model needs the nutpie sampler, not {settings.sampler!r}"
        )
    with (
        warnings.catch_warnings(),
        pytensor.config.change_flags(**COMPILE_FLAGS),
        cached_wrappers(),
    ):
        warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS")
        return nutpie.compile_pymc_model(model, backend=settings.backend, freeze_model=False)


def sample_compiled(
    compiled,
    settings: SamplerSettings,
    *,
    data: dict[str, np.ndarray] | None = None,
    seed: int | None = None,
    cores: int | None = None,
) -> tuple[xr.DataTree, float]:
    """Sample a model compiled by :func:`compile_for_refit`, with its data containers set to ``data``.

    Parameters
    ----------
    compiled : nutpie CompiledModel
        From :func:`compile_for_refit`.
    settings : SamplerSettings
        ``chains``, ``draws``, ``tune``, ``target_accept`` and (unless ``seed`` is given) ``seed``.
    data : dict, optional
        New values of data containers by name (e.g. ``{"y_observed": y}``); shapes must keep their rank.
    seed : int, optional
        Sampler seed; defaults to ``settings.seed``.
    cores : int, optional
        Threads for the chains (default ``settings.chain_cores``).

    Returns
    -------
    dt : xarray.DataTree
        Groups posterior and sample_stats (no warm-up, no predictive or log-density groups).
    seconds : float
        Wall seconds of the sampler call.
    """
    import nutpie

    model = compiled.with_data(**data) if data else compiled
    t = time.perf_counter()
    dt = nutpie.sample(
        model,
        draws=settings.draws,
        tune=settings.tune,
        chains=settings.chains,
        cores=settings.chain_cores if cores is None else cores,
        seed=int(settings.seed if seed is None else seed),
        save_warmup=False,
        progress_bar=False,
        target_accept=settings.target_accept,
    )
    seconds = time.perf_counter() - t
    for group in [g for g in dt.children if g.startswith("warmup")]:
        del dt[group]
    return dt, seconds
