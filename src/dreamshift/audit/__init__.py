"""Audit: how classifiers hold up on a dataset, per foreground class and per background.

``evaluate`` (``dreamshift audit``): it only evaluates; classifiers are trained by
``dreamshift learn``. Models come from :mod:`dreamshift.models`, metrics from
:mod:`dreamshift.metrics`, tables and the HTML page from :mod:`dreamshift.report`.
"""
