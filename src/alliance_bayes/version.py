"""The package's version, on the ground floor so that every layer may read it.

It is the ``version`` of ``pyproject.toml`` (a test keeps the two equal); ``run.json`` records the
installed distribution's version beside it (:mod:`alliance_bayes.provenance`).
"""

__version__ = "0.1.0"
