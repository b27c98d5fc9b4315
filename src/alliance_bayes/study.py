"""The whole study in one call: the paper's three questions fitted and reported together.

Sagui-Henson et al. (2022, doi:10.1007/s41347-022-00263-5) asked (1) how clients rated the
alliance across care types and demographics, (2) how well-being and depressive symptoms changed
among the clients who began care elevated, and (3) how the alliance relates to that change. Each
question has its model family; :data:`QUESTIONS` names the shipped specs that answer it.
:func:`reanalyse` fits each spec through the one pipeline (:func:`alliance_bayes.fitting.fit`),
saves each fit's own results bundle (``results/<spec>/<run-id>/``, marked FAILED where its gate
failed) and then writes the study's report ``results/study/<run-id>/``
(:func:`alliance_bayes.report.study.write_study_report`), atomically: a run that fails or is
interrupted leaves the bundles it finished and no study folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alliance_bayes.data.load import RawStudy
    from alliance_bayes.report.study import FitOutcome

__all__ = ["QUESTIONS", "StudyRun", "reanalyse"]

#: The study's questions, in the paper's order, and the specs that answer each.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "ratings": ("alliance_ratings",),
    "change": ("wellbeing_change", "depression_course"),
    "association": ("who5_change", "depression_change"),
}


@dataclass
class StudyRun:
    """A finished study run.

    Attributes
    ----------
    path : pathlib.Path
        The study's report folder ``<results>/study/<run-id>/``.
    fits : dict
        Spec name to :class:`~alliance_bayes.report.study.FitOutcome` (summary, hypotheses,
        provenance, bundle); the draws are in each bundle (:meth:`alliance_bayes.Fit.load`).
    """

    path: Path
    fits: dict[str, FitOutcome] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every fit passed its convergence gate."""
        return all(o.passed for o in self.fits.values())

    @property
    def bundles(self) -> dict[str, Path | None]:
        """Spec name to its results bundle."""
        return {name: o.bundle for name, o in self.fits.items()}


def _chosen(questions: Iterable[str] | None) -> list[str]:
    if questions is None:
        return list(QUESTIONS)
    asked = list(dict.fromkeys(questions))
    unknown = [q for q in asked if q not in QUESTIONS]
    if unknown or not asked:
        raise ValueError(f"questions must be some of {list(QUESTIONS)}, not {asked}")
    return [q for q in QUESTIONS if q in asked]  # the paper's order


def reanalyse(
    study: RawStudy | str | os.PathLike[str],
    results: str | os.PathLike[str] = "results",
    *,
    questions: Iterable[str] | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    sampler: str | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    figure_workers: int | Executor | None = 1,
    log: Callable[[str], None] | None = None,
) -> StudyRun:
    """Fit the study's questions, save every fit's bundle and write the study's report.

    Parameters
    ----------
    study : RawStudy or path
        A study from :func:`~alliance_bayes.data.load.load_study`, or its folder.
    results : path
        The results root: bundles go to ``<results>/<spec>/<run-id>/``, the report to
        ``<results>/study/<run-id>/``.
    questions : iterable of str, optional
        Keys of :data:`QUESTIONS` to run (default: all three).
    draws, tune, chains, seed, sampler : optional
        Override every spec's ``[sampler]`` table (``None`` keeps each spec's own).
    cache : path, optional
        Keep and reuse the draws (as :func:`~alliance_bayes.fitting.fit`).
    progress : bool
        Show the sampler's progress.
    figure_workers : int, None or Executor
        As in :meth:`~alliance_bayes.result.Fit.save`.
    log : callable, optional
        Receives a line as each fit starts and as its bundle is saved.

    Returns
    -------
    StudyRun
        ``passed`` only when every fit passed its gate; a failed fit's bundle is saved, marked
        FAILED, and so is the study's report.

    Raises
    ------
    ValueError
        Unknown questions.
    SpecError, DataContractError, DesignError
        Bad input, found before anything is sampled: every spec is read and its design built
        first.
    """
    # Imported here: the command's parser reads QUESTIONS and must answer --help at once.
    from alliance_bayes import fitting
    from alliance_bayes.data.frame import build_frame
    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.provenance import environment, run_id
    from alliance_bayes.report.study import FitOutcome, sample_characteristics, write_study_report

    say = log or (lambda line: None)
    chosen = _chosen(questions)
    if not isinstance(study, RawStudy):
        study = load_study(study)
    specs = {name: fitting.resolve_spec(name) for q in chosen for name in QUESTIONS[q]}
    for spec in specs.values():  # a design error stops the run before minutes of sampling
        fitting.design_of(spec, study)
    overrides = {
        k: v
        for k, v in {
            "draws": draws,
            "tune": tune,
            "chains": chains,
            "seed": seed,
            "sampler": sampler,
        }.items()
        if v is not None
    }
    run = run_id("study", chosen, study.sha256, overrides)
    frame = build_frame(study)
    # Table 1's "elevated" by the cut-offs of the specs that answer question 2 (the defaults when
    # that question is not run), so that its counts are the samples those fits select
    cutoffs = {
        key: getattr(specs[name].data, key)
        for name in QUESTIONS["change"]
        if name in specs
        for key in ("who5_cutoff", "phq9_cutoff")
        if getattr(specs[name], "outcome", "").startswith(key[:4])
    }
    table1 = sample_characteristics(frame.clients, **cutoffs)
    outcomes: dict[str, FitOutcome] = {}
    sections: dict[str, list[FitOutcome]] = {}
    for q in chosen:
        for name in QUESTIONS[q]:
            say(f"fitting {name} ({q})")
            result = fitting.fit(specs[name], study, cache=cache, progress=progress, **overrides)
            bundle = result.save(results, figure_workers=figure_workers)
            verdict = "passed" if result.passed else "FAILED its convergence gate"
            say(f"{name}: {verdict}; bundle {bundle}")
            outcomes[name] = FitOutcome.of(result)
            sections.setdefault(q, []).append(outcomes[name])
            del result  # the draws are in the bundle; five fits together would not fit memory
    meta = {
        "kind": "study",
        "run_id": run,
        "questions": chosen,
        "specs": list(specs),
        "data_sha256": study.sha256,
        "n_clients": len(frame.clients),
        "overrides": overrides,
        **environment(),
    }
    path = write_study_report(results, run, table1=table1, sections=sections, meta=meta)
    return StudyRun(path, outcomes)
