"""The ``alliance_ratings`` family: an explanatory graded-response model of every session rating.

:mod:`~alliance_bayes.model.ratings.design` turns an :class:`~alliance_bayes.data.frame.AnalysisFrame`
into arrays, :mod:`~alliance_bayes.model.ratings.graph` builds the PyMC model (the maths is in its
docstring), :mod:`~alliance_bayes.model.ratings.estimands` maps the draws to the items' rating scale
(the contract's 1–5, or a declared instrument's whole-number range) and
:mod:`~alliance_bayes.model.ratings.describe` writes the report's equations and priors.
"""
