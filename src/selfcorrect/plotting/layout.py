"""Which conditions each figure shows (from the registry, never from names here) and the tables it reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

# figures drawn from one family of config/conditions.yaml (figures 8 and 9 show every condition of the run)
FIGURE_FAMILY = {1: "main", 2: "main", 3: "specificity", 4: "negation", 5: "unethical", 6: "main"}


@dataclass(frozen=True)
class Layout:
    """Which conditions each figure shows, from the registry (``Registry.families/contrasts/cot_conditions``)."""

    families: dict = field(default_factory=dict)  # family -> conditions in level order
    contrasts: tuple = ()  # (condition, the condition it is compared with)
    cot: tuple = ()  # conditions that reason before answering

    def __post_init__(self):
        # the workflow hands these over as YAML-like lists; pairs are compared as tuples
        object.__setattr__(self, "contrasts", tuple(tuple(p) for p in self.contrasts))
        object.__setattr__(self, "cot", tuple(self.cot))

    @classmethod
    def from_registry(cls, registry, names: list[str] | None = None) -> "Layout":
        return cls(registry.families(names), registry.contrasts(names), registry.cot_conditions(names))

    def figure_conditions(self, n: int) -> list[str]:
        """Figure n's family in level order, after the conditions its members are contrasted with from outside it."""
        members = list(self.families.get(FIGURE_FAMILY.get(n), []))
        outside = [b for a, b in self.contrasts if a in members and b not in members]
        return list(dict.fromkeys(outside + members))

    def order(self) -> list[str]:
        """Every condition, family by family."""
        return list(dict.fromkeys(c for members in self.families.values() for c in members))

    def flip_condition(self) -> str | None:
        """The main family's highest-level condition without CoT: the self-correction instruction on its own."""
        plain = [c for c in self.families.get("main", []) if c not in self.cot]
        return plain[-1] if plain else None

    def cot_contrasts(self) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.contrasts if a in self.cot]


@dataclass
class Inputs:
    """The score tables a figure reads (results/scores/*.parquet, report/tables/models.csv)."""

    cells: pd.DataFrame  # bbq_cells
    items: pd.DataFrame  # bbq_outcomes
    models: pd.DataFrame
    layout: Layout
    rho: pd.DataFrame | None = None
    differences: pd.DataFrame | None = None
    seed: int = 0
