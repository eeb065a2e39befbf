"""Audit: how classifiers hold up on a dataset, per foreground class and per background.

``labels`` (a model's label space -> the dataset's classes), ``train`` (the world's ERM
classifiers, ``dreamshift train-classifier``), ``evaluate`` (``dreamshift audit``). Models come
from :mod:`dreamshift.models`, metrics from :mod:`dreamshift.metrics`, tables and the HTML page
from :mod:`dreamshift.report`.
"""
