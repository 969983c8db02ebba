"""The evaluator interface: what the training loop hands an evaluator, and what it gets back."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Sequence


@dataclasses.dataclass
class Context:
    """One evaluation of a run's members (a single run is one member) at one step."""

    task: Any  # tasks.Task
    mesh: Any  # jax.sharding.Mesh
    configs: Sequence[Any]  # member k's run config (the single run's own config for a single run)
    members: Sequence[int]  # the members to evaluate (a member stopped on a non-finite loss is left out)
    member_params: Callable[[int], Any]  # k -> member k's parameters
    params: Any  # every member's parameters, as the loss_sums function takes them
    loss_sums: Callable[[Any, Mapping[str, Any]], Mapping[str, Any]]  # (params, global batch) -> {sum: [members]}

    @property
    def config(self):
        return self.configs[0]


class Evaluator:
    """One entry of config.evals: `{type, split, every_steps, ...}`; subclasses add their fields."""

    FIELDS: ClassVar[dict[str, Any]] = {}  # the evaluator's own fields and their defaults

    def __init__(self, name: str, spec: Mapping[str, Any], config):
        base = {"type": None, "split": "", "every_steps": -1}
        unknown = sorted(set(spec) - set(base) - set(self.FIELDS))
        if unknown:
            raise ValueError(f"config.evals.{name} has unknown field(s) {unknown}; "
                             f"known: {sorted(set(base) | set(self.FIELDS))}")
        self.name, self.config = name, config
        self.opts = {**self.FIELDS, **{k: v for k, v in spec.items() if k not in base}}
        every = int(spec.get("every_steps", -1))
        self.every_steps = int(config.eval_every_steps) if every < 0 else every  # 0: never
        self.split = str(spec.get("split", "") or "") or config.data.get("eval_split", None) or "validation"

    def due(self, step: int, total: int) -> bool:
        """Whether to run after `step` of a run that stops at `total` (always after the last step)."""
        return self.every_steps > 0 and (step % self.every_steps == 0 or step == total)

    def evaluate(self, ctx: Context) -> dict[int, dict[str, float]]:
        """member k -> its `eval_<name>` metrics (an empty dict where the evaluator does not apply)."""
        raise NotImplementedError
