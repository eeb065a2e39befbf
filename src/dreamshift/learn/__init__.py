"""Learn: invariant foreground/background features (D3S) and the baselines they are compared
with, behind one DomainBed-style interface (``update(batch) -> dict``, ``predict(x)``).

Importing :mod:`dreamshift.learn.run` registers learn run folders as a classifier folder kind,
so that ``dreamshift audit DATASET --model RUN_FOLDER`` tests a run on any dataset; the
package itself imports nothing, so that :mod:`dreamshift.learn.config` stays light.
"""
