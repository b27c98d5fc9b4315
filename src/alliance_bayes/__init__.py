"""alliance-bayes: Bayesian hierarchical models of the therapeutic alliance and change in well-being.

Data flow (one way): ``data`` (load + validate → analysis frame) → ``model`` (TOML spec → PyMC model)
→ ``inference`` (sampling) → ``diagnostics`` (convergence gate) → ``report`` (results bundle).
"""

__version__ = "0.1.0"
