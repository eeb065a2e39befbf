"""dreamshift: image datasets with controlled foreground/background shifts.

The pipeline (see the documentation in docs/): world or your images -> compose -> dream ->
audit -> learn.
"""

__version__ = "0.1.0"
