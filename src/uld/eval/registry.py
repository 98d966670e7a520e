"""One metric registry: what each result metric is, how it is computed, which way is better.

Every metric a task writes into its result file is registered once, with its task, the function
that builds its entry from the task's per-item values, its direction, its group (what it costs
to compute: `probability` = forward passes, `generation` = decoding, `mia` = the membership
attacks, `gradient` = one backward pass per item, `aggregate` = numbers from other metrics), its
label for tables and whether it is in the task's default set. Computation (`--metrics`), the
result table, the summary and the direction arrows all read this registry; nothing else lists
metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from uld.errors import UldError, unknown_choice

Direction = Literal["higher", "lower", "closer_to_zero", "closer_to_half"]
Group = Literal["probability", "generation", "memorization", "mia", "gradient", "aggregate"]


@dataclass(frozen=True)
class Metric:
    """One entry of a task's result file (OpenUnlearning's name)."""

    name: str
    task: str
    direction: Direction
    group: Group
    label: str
    compute: Callable[[Any], dict | None]
    """Builds the metric's entry (`{"agg_value", "value_by_index", ...}`) from the task's
    per-item values; None when those values are absent (a partial log)."""
    requires: tuple[str, ...] = ()
    """Metrics whose inputs this one needs (computed and written with it)."""
    default: bool = True
    headline: bool = False
    """Shown in the result table."""
    needs: frozenset[str] = field(default_factory=frozenset)
    """What the task must measure for it (task-specific keys)."""


_REGISTRY: dict[str, dict[str, Metric]] = {}


def register(task: str, name: str, direction: Direction, group: Group, label: str = "", *, requires: tuple[str, ...] = (),
             default: bool = True, headline: bool = False, needs: tuple[str, ...] = ()) -> Callable:
    """Decorator: register `fn(values) -> entry | None` as metric `name` of `task`."""

    def add(fn: Callable[[Any], dict | None]) -> Callable[[Any], dict | None]:
        table = _REGISTRY.setdefault(task, {})
        if name in table:
            raise ValueError(f"metric {name!r} of task {task!r} is registered twice")
        table[name] = Metric(name, task, direction, group, label or name, fn, requires, default, headline, frozenset(needs))
        return fn

    return add


def metrics_of(task: str) -> dict[str, Metric]:
    """The task's metrics in registration order (the order of tables)."""
    if task not in _REGISTRY:
        raise unknown_choice("evaluation task", task, _REGISTRY)
    return _REGISTRY[task]


def find(name: str) -> Metric | None:
    """A metric by name in any task (names are unique across the tasks that share a table)."""
    for table in _REGISTRY.values():
        if name in table:
            return table[name]
    return None


def select(task: str, names: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The metrics to compute for a `--metrics` selection, dependencies included, registry order.

    `names`: None or "default" = the task's default set; "all" = every metric; otherwise a comma
    list (or sequence) of metric names or group names (`probability`, `generation`, ...)."""
    table = metrics_of(task)
    if names is None or names == "default":
        wanted = {n for n, m in table.items() if m.default}
    elif names == "all":
        wanted = set(table)
    else:
        items = [s.strip() for s in (names.split(",") if isinstance(names, str) else names) if s.strip()]
        if not items:
            raise UldError("--metrics is empty; give metric names separated by commas, 'default' or 'all'")
        groups = {m.group for m in table.values()}
        wanted = set()
        for item in items:
            if item in table:
                wanted.add(item)
            elif item in groups:
                wanted |= {n for n, m in table.items() if m.group == item}
            elif item in ("default", "all"):
                wanted |= set(select(task, item))
            else:
                raise unknown_choice(f"{task} metric", item, list(table) + sorted(groups))
    todo = list(wanted)
    while todo:
        for dep in table[todo.pop()].requires:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [n for n in table if n in wanted]


def direction_of(name: str) -> Direction | None:
    m = find(name)
    return m.direction if m else None
