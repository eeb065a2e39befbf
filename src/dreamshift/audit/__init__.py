"""Audit: how classifiers hold up on a dataset, per foreground class and per background.

``classifiers`` (one adapter surface and registry for every model), ``labels`` (a model's label
space -> the dataset's classes), ``train`` (the world's ERM classifiers), ``metrics`` (pure
functions on predictions), ``evaluate`` (``dreamshift audit``), ``report`` (the HTML page).
"""
