"""Prompt recipes: YAML files of templates that turn a sample's labels into a text prompt.

Shipped recipes (``dreamshift/dream/recipes``):

- ``d3s``: ``"a photo of a ${class_name}, ${definition}, ${background}"`` with D3S's ten
  background phrases (Kattakinda et al. 2022).
- ``d3s-imagenet-1k``: the same for ImageNet-1k's 1 000 classes, with their WordNet
  definitions read from timm's data files (``definitions_from: imagenet-1k``; compose names
  the classes of an ImageNet tree the same way with ``--class-names imagenet-1k``).
- ``imagenet-g``: the 80 CLIP ImageNet templates, ``"a sculpture of a ${class_name}."`` and so
  on, as ImageNet-G uses them (Bansal & Grover 2023; templates from Radford et al. 2021).

A recipe file holds ``templates`` (a list), and optionally ``negative_prompt``,
``backgrounds`` (background label -> phrase), ``definitions`` (class -> text) and
``definitions_from`` (``imagenet-1k`` or a TSV file of wnid, name, definition; its own
``definitions`` win). Templates use
``${placeholder}`` syntax; the placeholders are :data:`PLACEHOLDERS`. Every template and every
label a run needs is checked before any image is made.

>>> recipe = load_recipe("d3s")
>>> recipe.render(0, "cat", "snow")
'a photo of a cat, a small domesticated carnivorous mammal with soft fur, in snow'
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

from dreamshift.data.imagenet import IMAGENET_1K, synset_table
from dreamshift.errors import DreamshiftError

PLACEHOLDERS = {
    "class_name": "the foreground class, underscores read as spaces (a wnid suffix dropped)",
    "definition": "the class's entry in the recipe's 'definitions'",
    "background": "the background label's phrase in the recipe's 'backgrounds'",
    "background_name": "the background label, underscores read as spaces",
}
# the prompt for a scene alone: with the recipe's phrase for its background, or its label
BACKGROUND_TEMPLATES = ("a photo ${background}", "a photo of ${background_name}")
WNID_SUFFIX = re.compile(r"_n\d{8}$")  # ImageNet's twice-used lemmas: crane_n02012849
_KEYS = {"name", "templates", "negative_prompt", "backgrounds", "definitions", "definitions_from"}


def shipped_recipes() -> list[str]:
    """Names of the recipes that come with the package."""
    folder = resources.files("dreamshift.dream") / "recipes"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # the file it was read from
    templates: tuple[str, ...]
    negative_prompt: str = ""
    backgrounds: dict[str, str] = field(default_factory=dict)
    definitions: dict[str, str] = field(default_factory=dict)

    def content_hash(self) -> str:
        d = {
            "templates": self.templates,
            "negative_prompt": self.negative_prompt,
            "backgrounds": self.backgrounds,
            "definitions": self.definitions,
        }
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def background_template(self, bg_class: str | None) -> str:
        """The template of the prompt for the scene alone (``dream --mode remove``; ``inpaint``
        without class context): "a photo" and the background's phrase, or its label where the
        recipe has no phrase for it."""
        return BACKGROUND_TEMPLATES[0 if self.backgrounds.get(bg_class or "") else 1]

    def render_background(self, bg_class: str | None) -> str:
        """The prompt for the scene alone (see :meth:`background_template`).

        >>> d3s, imagenet_g = load_recipe("d3s"), load_recipe("imagenet-g")
        >>> d3s.render_background("grass"), imagenet_g.render_background("snow")
        ('a photo on grass', 'a photo of snow')
        """
        return Template(self.background_template(bg_class)).substitute(
            background=self.backgrounds.get(bg_class or "", ""),
            background_name=(bg_class or "").replace("_", " "),
        )

    def uses(self, placeholder: str) -> bool:
        return any(placeholder in Template(t).get_identifiers() for t in self.templates)

    def check_labels(self, classes: list[str], backgrounds: list[str]) -> None:
        """Fail before any image is made if a label the run needs has no text."""
        for placeholder, table, labels, what in (
            ("definition", self.definitions, classes, "classes"),
            ("background", self.backgrounds, backgrounds, "backgrounds"),
        ):
            missing = [x for x in labels if x not in table]
            if self.uses(placeholder) and missing:
                raise DreamshiftError(
                    f"prompt recipe {self.source} uses ${{{placeholder}}} but its "
                    f"'{placeholder}s' has no entry for the {what} {missing}: add them to a "
                    "copy of the recipe and pass it with --prompts FILE"
                )

    def render(self, template_index: int, fg_class: str | None, bg_class: str | None) -> str:
        values = {
            "class_name": WNID_SUFFIX.sub("", fg_class or "").replace("_", " "),
            "background_name": (bg_class or "").replace("_", " "),
            "definition": self.definitions.get(fg_class or "", ""),
            "background": self.backgrounds.get(bg_class or "", ""),
        }
        return Template(self.templates[template_index]).substitute(values)


def _recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise DreamshiftError(f"prompt recipe {path} does not exist")
        return path
    shipped = shipped_recipes()
    if name_or_path not in shipped:
        raise DreamshiftError(
            f"unknown prompt recipe {name_or_path!r}: choose one of {', '.join(shipped)} "
            "or pass a YAML file"
        )
    return Path(str(resources.files("dreamshift.dream") / "recipes" / f"{name_or_path}.yaml"))


def _string_table(path: Path, d: dict[str, Any], key: str) -> dict[str, str]:
    table = d.get(key) or {}
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise DreamshiftError(f"prompt recipe {path}: '{key}' must map names to text")
    return {str(k): v for k, v in table.items()}


def load_recipe(name_or_path: str) -> Recipe:
    """Read and check a recipe: a shipped name or a YAML file."""
    path = _recipe_path(name_or_path)
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DreamshiftError(f"cannot read prompt recipe {path}: {exc}") from exc
    if not isinstance(d, dict):
        raise DreamshiftError(f"prompt recipe {path} must be a mapping with 'templates'")
    unknown = set(d) - _KEYS
    if unknown:
        raise DreamshiftError(
            f"prompt recipe {path} has unknown keys {sorted(unknown)}: use {sorted(_KEYS)}"
        )
    templates = d.get("templates")
    if (
        not isinstance(templates, list)
        or not templates
        or not all(isinstance(t, str) for t in templates)
    ):
        raise DreamshiftError(f"prompt recipe {path}: 'templates' must be a non-empty list of text")
    for t in templates:
        tpl = Template(t)
        if not tpl.is_valid():
            raise DreamshiftError(
                f"prompt recipe {path}: template {t!r} is malformed (write placeholders as "
                "${name}, and a literal $ as $$)"
            )
        unknown_ph = sorted(set(tpl.get_identifiers()) - set(PLACEHOLDERS))
        if unknown_ph:
            raise DreamshiftError(
                f"prompt recipe {path}: template {t!r} uses unknown placeholders "
                f"{unknown_ph}; known: {', '.join(sorted(PLACEHOLDERS))}"
            )
    negative = d.get("negative_prompt") or ""
    if not isinstance(negative, str):
        raise DreamshiftError(f"prompt recipe {path}: 'negative_prompt' must be text")
    definitions = _string_table(path, d, "definitions")
    if d.get("definitions_from"):  # a class table: imagenet-1k (timm's files) or a TSV file
        source = str(d["definitions_from"])
        if source != IMAGENET_1K and not Path(source).is_absolute():
            source = str(path.parent / source)
        table = {s.name: s.definition for s in synset_table(source).values()}
        definitions = {**table, **definitions}  # the recipe's own entries win
    return Recipe(
        name=str(d.get("name") or path.stem),
        source=str(path),
        templates=tuple(templates),
        negative_prompt=negative,
        backgrounds=_string_table(path, d, "backgrounds"),
        definitions=definitions,
    )
