"""Learn: invariant foreground/background features (D3S) and the baselines they are compared
with, behind one DomainBed-style interface (``update(batch) -> dict``, ``predict(x)``)."""
