"""Learn: invariant foreground/background features (D3S) and the baselines they are compared
with, behind one DomainBed-style interface (``update(batch) -> dict``, ``predict(x)``).

Importing it registers learn run folders as a classifier folder kind, so that
``dreamshift audit DATASET --model RUN_FOLDER`` tests a run on any dataset.
"""

from dreamshift.learn import run
from dreamshift.models.loading import FOLDER_KINDS, FolderKind

FOLDER_KINDS.register("learn-run")(FolderKind(run.is_run, run.run_classifier))
