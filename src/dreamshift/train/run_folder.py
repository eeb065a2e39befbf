"""The names of the files in a training run's folder, written by the stage that trains it
(``train-classifier``, ``learn``) and read by others (audit, report) through these names."""

CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"  # :mod:`dreamshift.train.checkpoint`, one per epoch
DONE = "done"  # written last: the run is finished
PROBES = "probes.jsonl"  # a learn run: one record per `dreamshift probe`
