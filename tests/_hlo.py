"""Reading compiled HLO text: computations, what a while loop calls, and collectives by kind."""

import re

import numpy as np

_REDUCTION = re.compile(r"=\s*(.+?)\s+(?:all-reduce|reduce-scatter)(?:-start)?\(")
_CALLED = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)")


def _computations(hlo: str) -> dict[str, list[str]]:
    """HLO module text -> {computation name: its instruction lines}."""
    comps, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{$", line)
        if head and not line[0].isspace():
            name = head.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    return comps


def _called(line: str) -> list[str]:
    names = _CALLED.findall(line)
    for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
        names += [n.strip().lstrip("%") for n in group.split(",")]
    return names


def _reduced_elements(lines) -> int:
    """Elements of the results of the all-reduces and reduce-scatters (sync or async) in `lines`."""
    total = 0
    for line in lines:
        m = _REDUCTION.search(line)
        if m:
            for dims in re.findall(r"[a-z]\w*\[([\d,]*)\]", m.group(1)):
                total += int(np.prod([int(d) for d in dims.split(",") if d]))
    return total


def reductions_in_and_out_of_loops(hlo: str) -> tuple[int, int]:
    """(elements reduced inside while-loop bodies and what they call, elements reduced elsewhere)."""
    comps = _computations(hlo)
    todo = [re.search(r"body=%?([\w.\-]+)", line).group(1)
            for lines in comps.values() for line in lines if " while(" in line]
    in_loops: set[str] = set()
    while todo:
        name = todo.pop()
        if name in comps and name not in in_loops:
            in_loops.add(name)
            todo += [c for line in comps[name] for c in _called(line)]
    inside = sum(_reduced_elements(comps[c]) for c in in_loops)
    return inside, sum(_reduced_elements(lines) for lines in comps.values()) - inside


_COLLECTIVE = re.compile(r"=\s*(.+?)\s+({kinds})(?:-start)?\(")


def collectives(hlo: str, kinds: tuple[str, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """(kind, result shape) of every collective of the given kinds (sync or async start) in the module."""
    pattern = re.compile(_COLLECTIVE.pattern.format(kinds="|".join(re.escape(k) for k in kinds)))
    found = []
    for line in hlo.splitlines():
        m = pattern.search(line)
        if m:
            for dims in re.findall(r"[a-z]\w*\[([\d,]*)\]", m.group(1)):
                found.append((m.group(2), tuple(int(d) for d in dims.split(",") if d)))
    return found
