"""alliance-bayes: Bayesian hierarchical models of the therapeutic alliance and change in well-being.

The public API::

    import alliance_bayes as ab

    study = ab.load_study("path/to/study")    # validated and pseudonymised; DataContractError
    study = ab.RawStudy.from_frames(providers, clients, sessions)  # three pandas DataFrames
    fit = ab.fit("who5_change", study)        # spec name, TOML path or ab.load_spec(...)
    fit.passed, fit.summary(), fit.tables("latex")
    path = fit.save("results")                # the atomic results bundle
    again = ab.Fit.load(path)
    run = ab.reanalyse(study, "results")      # the study's three questions and one report

Data flow (one way): ``data`` (load + validate → analysis frame) → ``model`` (TOML spec → the
family's PyMC model) → ``inference`` (sampling) → ``diagnostics`` (convergence gate) → ``report``
(results bundle); :mod:`alliance_bayes.fitting` is the one pipeline through them. Names are
imported on first use, so that ``import alliance_bayes`` (and the command's ``--help``) is quick.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from alliance_bayes.version import __version__

_API = {
    "load_study": "alliance_bayes.data.load",
    "RawStudy": "alliance_bayes.data.load",
    "DataContractError": "alliance_bayes.errors",
    "load_spec": "alliance_bayes.spec",
    "spec_names": "alliance_bayes.spec",
    "SpecError": "alliance_bayes.errors",
    "DesignError": "alliance_bayes.errors",
    "fit": "alliance_bayes.fitting",
    "Fit": "alliance_bayes.result",
    "reanalyse": "alliance_bayes.study",
}
__all__ = [
    "DataContractError",
    "DesignError",
    "Fit",
    "RawStudy",
    "SpecError",
    "__version__",
    "fit",
    "load_spec",
    "load_study",
    "reanalyse",
    "spec_names",
]

if TYPE_CHECKING:
    from alliance_bayes.data.load import RawStudy, load_study
    from alliance_bayes.errors import DataContractError, DesignError, SpecError
    from alliance_bayes.fitting import fit
    from alliance_bayes.result import Fit
    from alliance_bayes.spec import load_spec, spec_names
    from alliance_bayes.study import reanalyse


def __dir__() -> list[str]:
    """The public API (what tab completion offers), not the module's own imports."""
    return sorted(__all__)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'alliance_bayes' has no attribute {name!r}")
