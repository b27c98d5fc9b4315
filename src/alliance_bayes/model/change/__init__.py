"""The change family: baseline and follow-up of every client with the instrument's measurement error.

See :mod:`alliance_bayes.model.change.graph` for the model and
:mod:`alliance_bayes.model.change.estimands` for the change among the clients elevated at baseline,
with the regression to the mean separated out.
"""
