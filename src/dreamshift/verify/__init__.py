"""verify: is the labelled object really in each image? Automatic scores (``verify``) and
people's votes (``review``), written beside the manifest (:mod:`dreamshift.data.verification`)."""
