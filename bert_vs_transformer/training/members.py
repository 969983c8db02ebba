"""Member runs' names: which (seed, peak learning rate) runs config.member_seeds x config.member_lrs
asks for, each one's single-run config and directory, and one member's slice of a stacked tree.
The program that trains them together is member_group.Group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from bert_vs_transformer import tasks


def run_name(lr: float, seed: int) -> str:
    """A member's directory name, lr<l>-seed<s> (glue_grid names its single runs the same way)."""
    return f"lr{lr:g}-seed{seed}"


@dataclass(frozen=True)
class Member:
    seed: int
    learning_rate: float

    @property
    def name(self) -> str:  # the member's directory
        return run_name(self.learning_rate, self.seed)


@jax.jit
def member_slice(tree, k):
    """Member k's leaves of a stacked tree, as one compiled program for every k and tree of that
    structure (indexing the leaves eagerly compiles a program per leaf shape)."""
    return jax.tree_util.tree_map(lambda x: x[k], tree)


def _split(value: Any, cast) -> list:
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).replace(";", ",").split(",")
    return [cast(x) for x in items if str(x).strip()]


def parse(config) -> list[Member] | None:
    """config.member_seeds x config.member_lrs (comma-separated; either may be empty: then the run's
    own seed / learning rate) -> members, or None when both are empty (a single run)."""
    try:
        seeds = _split(config.get("member_seeds", ""), int)
        lrs = _split(config.get("member_lrs", ""), float)
    except ValueError as e:
        raise ValueError(f"config.member_seeds / config.member_lrs must be comma-separated numbers: {e}") from None
    if not seeds and not lrs:
        return None
    seeds = seeds or [int(config.seed)]
    lrs = lrs or [float(config.optimizer.learning_rate)]
    members = [Member(s, lr) for lr in lrs for s in seeds]
    if len(set(members)) != len(members) or len({m.name for m in members}) != len(members):
        raise ValueError(f"config.member_seeds / config.member_lrs repeat a member (or two lrs print alike): {[m.name for m in members]}")
    supported = sorted(name for name, cls in tasks.TASKS.items() if cls.supports_members)
    if config.get("task") not in supported:
        raise ValueError(f"config.member_seeds / member_lrs are implemented for task in {supported}, "
                         f"not {config.get('task')!r}")
    if config.get("init_heads", False):
        raise ValueError("config.member_seeds / member_lrs do not combine with config.init_heads")
    if len(lrs) > 1 and config.optimizer.schedule == "rsqrt":
        raise ValueError("config.member_lrs needs a schedule with a peak learning rate (warmup_linear_decay, "
                         "constant), not rsqrt")
    return members


def member_config(config, member: Member):
    """The single run's config that `member` reproduces."""
    c = config.copy_and_resolve_references()
    c.seed = member.seed
    c.optimizer.learning_rate = member.learning_rate
    c.member_seeds, c.member_lrs = "", ""
    return c


def resume_problems(saved: dict, config) -> list[str]:
    """Member-axis differences between a checkpoint's run config and this one (its state's shapes)."""
    problems = []
    for field in ("member_seeds", "member_lrs"):
        if str(saved.get(field, "") or "") != str(config.get(field, "") or ""):
            problems.append(f"{field} {saved.get(field, '')!r} there, {config.get(field, '')!r} here "
                            "(the checkpoint's member axis differs)")
    return problems
