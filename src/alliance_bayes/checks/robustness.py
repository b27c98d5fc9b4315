r"""The sensitivity analyses a reviewer asks for, each a variant of one base spec, in one table.

Variants of the base (``who5_change`` by default; each is also a shipped TOML for that base):

``early alliance``
    alliance averaged over each client's first 3 sessions (``alliance_sessions = 3``): alliance over
    all sessions includes sessions after symptoms already changed, so part of the association may
    run from change to alliance (Falkenström, Granström & Holmqvist 2013, doi:10.1037/a0031427);
``without days in care``
    days in care may itself follow from alliance (a mediator); adjusting for a mediator removes the
    part of the total effect that runs through it;
``δ = 0, −5, −10``
    missing follow-up by multiple imputation from the posterior, the imputed follow-ups shifted by
    δ WHO-5 points: δ = 0 is missing at random (it should match the base within Monte Carlo
    error), δ < 0 says the clients who did not return were doing worse than their predictors
    imply (delta-adjusted pattern mixture, :mod:`alliance_bayes.imputation`).

Conclusion per estimand, in words: *robust* when its 95% interval lies above 0, below 0 or across 0
alike in every analysis; otherwise which analyses change that verdict.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from alliance_bayes.checks.base import CheckResult
from alliance_bayes.report.render import markdown_table
from alliance_bayes.spec import ModelSpec, load_spec

__all__ = ["KEY_ESTIMANDS", "conclusions", "robustness_markdown", "run_robustness", "variants"]

#: Estimands the table reports (those a model lacks are left out of its block).
KEY_ESTIMANDS = (
    "b_goal_within", "b_bond_within", "b_task_within", "b_goal_between", "b_bond_between",
    "b_task_between", "b_goal_within-between", "b_bond_within-between",
    "b_care[therapist-coach]", "b_care[both-coach]", "beta_goal_within", "beta_bond_within",
    "r2_bayes",
)  # fmt: skip
DELTAS = (0.0, -5.0, -10.0)
# (δ₀, δ₁): non-returners 5 points worse than predicted at the mean alliance, and 5 points worse
# again per alliance point below it: the missingness that would bias an alliance slope.
DELTA_ALLIANCE = (-5.0, 5.0)
EARLY_SESSIONS = 3
IMPUTATIONS = 5


def _delta_suffix(delta: float) -> str:
    return f"delta_{'minus' if delta < 0 else ''}{abs(delta):g}"


def variants(base: str | ModelSpec = "who5_change") -> list[tuple[str, ModelSpec]]:
    """(label, spec) of the base and every reviewer variant, in table order."""
    spec = base if isinstance(base, ModelSpec) else load_spec(base)
    name = spec.name
    origin = spec.source if Path(spec.source).is_file() else name

    def variant(suffix: str, **changes) -> ModelSpec:
        return load_spec(origin, name=f"{name}_{suffix}", **changes)

    covariates = [c for c in spec.predictors.covariates if c != "days_in_care"]
    out = [
        ("main analysis", spec),
        (
            f"early alliance (first {EARLY_SESSIONS} sessions)",
            variant("early_alliance", predictors={"alliance_sessions": EARLY_SESSIONS}),
        ),
        ("without days in care", variant("no_days", predictors={"covariates": covariates})),
    ]
    for delta in DELTAS:
        label = f"missing follow-up, δ = {delta:+g}" + (" (MAR)" if delta == 0 else " (MNAR)")
        imputed = {"followup_imputations": IMPUTATIONS, "followup_delta": delta}
        out.append((label, variant(_delta_suffix(delta), data=imputed)))
    d0, d1 = DELTA_ALLIANCE
    label = f"missing follow-up, δ = {d0:+g} {d1:+g}·(alliance − mean) (MNAR, alliance-dependent)"
    imputed = {
        "followup_imputations": IMPUTATIONS,
        "followup_delta": d0,
        "followup_delta_alliance": d1,
    }
    out.append((label, variant("delta_alliance", data=imputed)))
    return out


def _verdict(low: float, high: float) -> str:
    return "above 0" if low > 0 else "below 0" if high < 0 else "includes 0"


def conclusions(table: pd.DataFrame) -> list[str]:
    """One sentence per estimand: robust when its 95% interval is above 0, below 0 or includes 0
    in every analysis alike, else which analyses change that verdict."""
    out = []
    for name, rows in table.groupby("estimand", sort=False):
        if len(rows) < 2:
            continue
        verdicts = [
            _verdict(lo, hi) for lo, hi in zip(rows["hdi95_low"], rows["hdi95_high"], strict=True)
        ]
        base = verdicts[0]
        changed = [
            f"{a} ({v})" for a, v in zip(rows["analysis"], verdicts, strict=True) if v != base
        ]
        span = f"means {rows['mean'].min():.2f} to {rows['mean'].max():.2f}"
        if not changed:
            out.append(
                f"`{name}`: robust — its 95% interval {base} in all {len(rows)} analyses ({span})."
            )
        else:
            out.append(
                f"`{name}`: not robust — its 95% interval {base} in the main analysis but not in "
                f"{'; '.join(changed)} ({span})."
            )
    return out


def robustness_markdown(table: pd.DataFrame, base: str) -> str:
    """The row blocks, then the conclusions in words."""
    rows = []
    for analysis, block in table.groupby("analysis", sort=False):
        first = True
        for r in block.itertuples():
            rows.append(
                [
                    f"**{analysis}**" if first else "",
                    f"`{r.estimand}`",
                    f"{r.mean:.2f} [{r.hdi95_low:.2f}, {r.hdi95_high:.2f}]",
                    f"{r.prob_positive:.3f}",
                    str(r.n_clients),
                    r.gate,
                ]
            )
            first = False
    lines = [
        f"# Reviewer sensitivity analyses: base `{base}`",
        "",
        *markdown_table(
            ["Analysis", "Estimand", "Mean [95% HDI]", "P(>0)", "Clients", "Convergence"], rows
        ),
        "",
        "The δ analyses impute each missing follow-up from the posterior and add δ points "
        f"before refitting ({IMPUTATIONS} imputations); their rows are Rubin's rules over the "
        "refits (mean, 95% interval with a t reference, P(>0) from it), and their clients "
        "include those imputed. The other rows are posterior means and 95% HDIs.",
        "",
    ]
    said = conclusions(table)
    robust = sum("robust —" in s and "not robust" not in s for s in said)
    lines += [
        f"**Conclusion: {robust} of {len(said)} key estimands are robust to every analysis.**",
        "",
        *(f"- {s}" for s in said),
        "",
    ]
    return "\n".join(lines)


def run_robustness(
    study,
    results: Path,
    *,
    base: str = "who5_change",
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    cache: Path | None = None,
    log: Callable[[str], None] = print,
    analyses: Sequence[tuple[str, ModelSpec]] | None = None,
) -> CheckResult:
    """Fit the base and each variant; write ``<results>/robustness/<run-id>/``.

    Returns a :class:`~alliance_bayes.checks.base.CheckResult` without a verdict (whether a
    conclusion survives every analysis is reported per estimand, :func:`conclusions`): the table
    of every analysis's estimates, the Markdown summary, the folder and the runs' metadata.
    """
    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.fitting import fit
    from alliance_bayes.provenance import environment, time_id
    from alliance_bayes.storage import atomic_folder, dump_json

    started = time.perf_counter()
    study = study if isinstance(study, RawStudy) else load_study(study)
    rows, meta_runs = [], {}
    # The δ analyses share one complete-case fit, through the cache (a scratch one by default).
    scratch = tempfile.TemporaryDirectory(prefix="robustness-") if cache is None else None
    cache = Path(scratch.name) if scratch is not None else cache
    for label, spec in analyses or variants(base):
        t = time.perf_counter()
        result = fit(
            spec, study, draws=draws, tune=tune, chains=chains, progress=False, cache=cache
        )
        summary = result.summary()
        rubin = (result.meta.get("imputation") or {}).get("rubin")
        if rubin:  # multiple imputation: Rubin's rules, not the mixture of few refits
            summary = pd.DataFrame(rubin).set_index("estimand")
            summary = summary.rename(columns={"ci95_low": "hdi95_low", "ci95_high": "hdi95_high"})
        gate = "passed" if result.passed else "FAILED"
        for name in (n for n in KEY_ESTIMANDS if n in summary.index):
            r = summary.loc[name]
            rows.append(
                {
                    "analysis": label,
                    "spec": spec.name,
                    "estimand": name,
                    "mean": r["mean"],
                    "sd": r["sd"],
                    "hdi95_low": r["hdi95_low"],
                    "hdi95_high": r["hdi95_high"],
                    "prob_positive": r["prob_positive"],
                    "n_clients": result.meta.get("n_clients"),
                    "gate": gate,
                }
            )
        meta_runs[spec.name] = {
            "label": label,
            "gate": result.gate.headline(),
            "n_clients": result.meta.get("n_clients"),
            "wall_s": time.perf_counter() - t,
            "imputation": result.meta.get("imputation"),
        }
        log(f"{label} ({spec.name}): {result.gate.headline()}, {time.perf_counter() - t:.0f} s")
    if scratch is not None:
        scratch.cleanup()
    table = pd.DataFrame(rows)
    name = base if isinstance(base, str) else base.name
    text = robustness_markdown(table, Path(name).stem)
    log(text)
    run = time_id()
    meta = {
        "base": name,
        "runs": meta_runs,
        "data_sha256": study.sha256,
        "wall_s": time.perf_counter() - started,
        **environment(),
    }
    with atomic_folder(Path(results) / "robustness", run) as tmp:
        (tmp / "robustness.md").write_text(text, encoding="utf-8")
        table.to_csv(tmp / "robustness.csv", index=False, lineterminator="\n")
        dump_json(meta, tmp / "run.json")
    path = Path(results) / "robustness" / run
    return CheckResult("robustness", None, table, text, path, {"meta": meta})
