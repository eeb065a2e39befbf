"""The embedded world: animal silhouettes on procedural backgrounds, no downloads needed.

It is a small-scale stand-in for real photographs: results on it show that a method works,
not how a production model behaves.
"""

from dreamshift.world.animals import CLASSES, Silhouettes, load_silhouettes
from dreamshift.world.backgrounds import BACKGROUNDS, render_background

__all__ = ["BACKGROUNDS", "CLASSES", "Silhouettes", "load_silhouettes", "render_background"]
