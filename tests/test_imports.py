"""The package's import graph: no circle, imports only downwards, every module imports alone.

The graph is read from the source with ``ast``: an arrow A -> B for every ``import`` statement
in A that names B, at module level *and* inside functions. A function-level import is deferred,
but it is still a dependency: a circle through one ties the two modules together just the same
(the ``evaluate`` command's old circle ran through one).

Layers, bottom to top (``ALLOWED``: a layer imports only from itself and the layers below):

* core: ``bcos_jax`` itself, every top-level module (``layers``, ``norms``, ``explain``,
  ``visualize``, ``convert``, ``hub`` (models on disk), ``jsonio``, ...) and ``models`` —
  JAX/Flax/NumPy only, heavier packages imported lazily where needed.
* ``data`` (input pipelines, the eval transform) beside ``attribution`` (post-hoc methods).
* ``evaluation`` (a library: metrics, reports), then ``training`` (the trainer's pieces).
* ``commands`` (the ``bcos-jax`` entry points): imported by nothing.

A new subpackage has to be placed in ``ALLOWED`` before this test passes.
Run as a script to print the graph: ``python tests/test_imports.py [PACKAGE_DIR]``.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from typing import Dict, List, Set

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bcos_jax")

# Which layers each layer may import (itself included).
ALLOWED = {
    "core": {"core"},
    "data": {"core", "data"},
    "attribution": {"core", "attribution"},
    "evaluation": {"core", "data", "attribution", "evaluation"},
    "training": {"core", "data", "attribution", "evaluation", "training"},
    "commands": {"core", "data", "attribution", "evaluation", "training", "commands"},
}
CORE_PACKAGES = ("models",)


def layer_of(module: str, files=None) -> str:
    """The layer of a module of ``bcos_jax`` ('' for a subpackage placed in none)."""
    parts = module.split(".")
    if parts[1:2] == ["cli"]:  # the command line before it became a package
        return "commands"
    if len(parts) == 1 or parts[1] in CORE_PACKAGES:
        return "core"
    if len(parts) == 2 and files is not None and not files[module].endswith("__init__.py"):
        return "core"  # a top-level module
    return parts[1] if parts[1] in ALLOWED else ""


def module_files(root: str = ROOT) -> Dict[str, str]:
    """{dotted module name: file} for every .py file under ``root`` (a package directory)."""
    base = os.path.dirname(os.path.abspath(root))
    out = {}
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__pycache__")))
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), base)[: -len(".py")].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(d, f)
    return out


def _resolve(target: str, modules) -> str:
    """The longest prefix of ``target`` that is a module of the package (or '' if none)."""
    parts = target.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


def import_graph(root: str = ROOT, function_level: bool = True) -> Dict[str, Set[str]]:
    """{module: modules of the same package it imports}; self-imports dropped.

    ``from P import x`` is an arrow to ``P.x`` when that is a module, else to ``P``.
    ``function_level=False`` keeps only the imports of the module body (not in a def).
    """
    files = module_files(root)
    pkg = os.path.basename(os.path.abspath(root))
    graph: Dict[str, Set[str]] = {}
    for name, path in files.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        nodes = ast.walk(tree) if function_level else _body_nodes(tree)
        is_pkg = path.endswith("__init__.py")
        edges = set()
        for node in nodes:
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    here = name.split(".") if is_pkg else name.split(".")[:-1]
                    here = here[: len(here) - (node.level - 1)]
                    mod = ".".join(here + ([mod] if mod else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in files else mod
                           for a in node.names]
            for t in targets:
                if t == pkg or t.startswith(pkg + "."):
                    r = _resolve(t, files)
                    if r and r != name:
                        edges.add(r)
        graph[name] = edges
    return graph


def _body_nodes(tree: ast.AST):
    """The nodes of a module outside any function (class bodies and if/try blocks included)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                stack.append(child)


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def violations(graph: Dict[str, Set[str]], root: str = ROOT) -> List[str]:
    """Arrows that go up or sideways across the layers (``ALLOWED``), and unplaced modules."""
    files = module_files(root)
    out = []
    for a, targets in sorted(graph.items()):
        la = layer_of(a, files)
        if not la:
            out.append(f"{a}: in no layer (place its package in tests/test_imports.py:ALLOWED)")
            continue
        for b in sorted(targets):
            lb = layer_of(b, files)
            if lb and lb not in ALLOWED[la]:
                out.append(f"{a} -> {b} ({la} may import only {', '.join(sorted(ALLOWED[la]))})")
    return out


# ---------------------------------------------------------------------------------------
def test_graph_reader_sees_both_levels(tmp_path):
    pkg = tmp_path / "p"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from p import a\n")
    (pkg / "a.py").write_text("import os\nfrom p.sub import b\n\ndef f():\n    from . import c\n")
    (pkg / "c.py").write_text("from .sub.b import x\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from ..a import f\nx = 1\n")
    g = import_graph(str(pkg))
    assert g == {"p": {"p.a"}, "p.a": {"p.sub.b", "p.c"}, "p.c": {"p.sub.b"}, "p.sub": set(),
                 "p.sub.b": {"p.a"}}
    assert import_graph(str(pkg), function_level=False)["p.a"] == {"p.sub.b"}
    assert cycles(g) == [["p.a", "p.c", "p.sub.b"]]  # a -> c -> b -> a, and a -> b -> a


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import circles (module- and function-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def test_imports_only_go_downwards():
    bad = violations(import_graph())
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


_IMPORT_EACH = r"""
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "bcos_jax" or m.startswith("bcos_jax.")]:
        del sys.modules[m]
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def test_every_module_imports_on_its_own():
    # One interpreter; before each module every bcos_jax module is dropped from sys.modules,
    # so each import starts from nothing of ours (third-party packages stay loaded: fast).
    names = sorted(module_files())
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True,
                          text=True, env=env, timeout=600, cwd=os.path.dirname(ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_import_bcos_jax_stays_light():
    # The core imports JAX/Flax only: no torch, no orbax, no TensorFlow for `import bcos_jax`.
    code = ("import sys, bcos_jax, bcos_jax.models, bcos_jax.visualize; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'orbax', 'tensorflow', 'tensorflow_datasets', 'grain'}))")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, cwd=os.path.dirname(ROOT))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "[]", out.stdout


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else ROOT
    g = import_graph(root)
    top = import_graph(root, function_level=False)
    for a in sorted(g):
        for b in sorted(g[a]):
            print(f"{a} -> {b}" + ("" if b in top[a] else "  (in a function)"))
    print("cycles:", json.dumps(cycles(g)))
    print("cycles of module-level imports:", json.dumps(cycles(top)))
    print("violations:", json.dumps(violations(g, root), indent=1))
