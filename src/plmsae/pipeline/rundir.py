"""The run directory of ``plmsae run``/``plmsae demo``: its names and how to find its layers.

::

    OUT/run_state.json      stage -> settings hash, done flag, seconds
    OUT/config.json         the resolved config of the last run
    OUT/store/              activation store (all layers, one forward pass)
    OUT/L{layer}/sae/       SAE checkpoint (+ evaluation.json, the evaluate stage's result)
    OUT/L{layer}/assoc/     association directory (+ explanations)
    OUT/L{layer}/site/      HTML atlas
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from plmsae._util import InputError

STATE = "run_state.json"
CONFIG = "config.json"
STORE = "store"
EVALUATION = "evaluation.json"


@dataclasses.dataclass
class UnitPaths:
    """Where one layer's outputs go inside a run directory."""

    sae: Path
    assoc: Path
    site: Path

    @classmethod
    def of(cls, out: Path, layer: int) -> UnitPaths:
        return cls.at(out / f"L{layer}")

    @classmethod
    def at(cls, unit: Path) -> UnitPaths:
        return cls(sae=unit / "sae", assoc=unit / "assoc", site=unit / "site")

    @property
    def index(self) -> Path:
        return self.site / "index.html"


def find_units(run_dir: Path) -> list[Path]:
    """The ``L{layer}`` directories of a run dir (or the directory itself if it is one)."""
    run_dir = Path(run_dir)
    if (run_dir / "assoc").is_dir() and (run_dir / "sae").is_dir():
        return [run_dir]
    units = sorted(
        (p for p in run_dir.glob("L*") if (p / "sae").is_dir()),
        key=lambda p: int(p.name[1:]) if p.name[1:].isdigit() else 0,
    )
    if not units:
        raise InputError(
            "no finished layer found (expected L<layer>/sae and L<layer>/assoc).",
            path=run_dir,
            fix="give a directory written by `plmsae run` or `plmsae demo`, after it finished.",
        )
    return units
