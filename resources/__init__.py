"""The files neuron-desk reads at run time, shipped as the package `neuron_desk.resources`.

This top-level folder is the package `neuron_desk.resources`: pyproject.toml maps it there
(`[tool.setuptools] package-dir`), so a wheel carries it inside `neuron_desk/` and an editable
install imports it from here. What lives here:

- `datasets/*.sqlite3`: read-only dataset stores bundled with the app, listed before the
  public datasets. The SmolLM2-135M-Instruct sample is rebuilt by `packaging/build_sample.py`.
  `smollm2-135m-instruct-sae.sqlite3` (its latents) by `packaging/build_latents.py`.
- `dictionaries/<name>/<hook point>/`: SAE weights in SAELens format (`cfg.json`,
  `sae_weights.safetensors`), named by a bundled latent dataset's `Dictionary.weights`.
- `icons/neuron-desk.svg`: the application icon (`packaging/render_icons.py` renders the
  hicolor PNGs from it).
- `few_shot/few_shot_examples.json`, `few_shot/token_space_few_shot_examples.json`: the
  few-shot examples of the original prompts, carried over unchanged from neuron-explainer
  (read by `neuron_desk.method.few_shot`); `few_shot/puzzles.json`: its explanation puzzles
  (read by `neuron_desk.method.puzzles`).
- `interesting/gpt2-xl.json`: GPT-2 XL neurons worth a look, with labels (read by
  `neuron_desk.data.registry`).
- `screenshots/*.png`: the README's images. Not package data: they stay out of the wheel.

A leaf module: it imports nothing from neuron_desk, so anything may use it.
"""

from __future__ import annotations

import importlib.resources
import pathlib
from importlib.resources.abc import Traversable

_ICON = ("icons", "neuron-desk.svg")


def root() -> Traversable:
    """This package's folder (a real directory in a wheel, an editable install or a bundle)."""
    return importlib.resources.files(__name__)


def read_text(*parts: str) -> str:
    """The UTF-8 text of the file at `parts` under the package folder.

    For example `read_text("few_shot", "few_shot_examples.json")`.
    """
    return root().joinpath(*parts).read_text(encoding="utf-8")


def bundled_datasets() -> list[pathlib.Path]:
    """The bundled dataset stores (`datasets/*.sqlite3`), sorted, as real file paths.

    SQLite opens files by path, so only stores that exist on disk are listed.
    """
    folder = root().joinpath("datasets")
    if not folder.is_dir():
        return []
    paths = (pathlib.Path(str(p)) for p in folder.iterdir() if p.name.endswith(".sqlite3"))
    return sorted(p for p in paths if p.is_file())


def icon_path() -> pathlib.Path | None:
    """The application icon's SVG (`icons/neuron-desk.svg`), or None if it is missing."""
    path = pathlib.Path(str(root().joinpath(*_ICON)))
    return path if path.is_file() else None
