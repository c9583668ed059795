"""The package's shape: no import cycles, the core free of NeMo, modules of one idea that say what they hold, and
tests that share helpers through helper modules, not through each other."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnt_plugin"
MAX_LINES = 350
LONG_BY_NEED = {  # one idea each, longer than MAX_LINES
    "rnnt_plugin.data.synth": "the synthetic corpus: engines, voices, plans and the generator's CLI",
    "rnnt_plugin.data.librispeech": "LibriSpeech preparation: scan, check, tokenizer, manifests and its CLI",
    "rnnt_plugin.losses.cuda": "the CUDA kernels of the loss and their launch",
}
# What the core may import besides the standard library and itself.
CORE_THIRD_PARTY = {"torch", "numpy", "numba", "llvmlite", "librosa", "scipy"}
CORE = ("rnnt_plugin.core", "rnnt_plugin.losses", "rnnt_plugin.cpu_threads")
# Resolves a loss name to the plugin's loss or to one of NeMo's, importing NeMo only when one of NeMo's is named.
NEMO_BACKENDS = "rnnt_plugin.losses.registry"


def _modules() -> dict:
    """Module name -> parsed source, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = (path, ast.parse(path.read_text()))
    return out


def _imports(name: str, tree: ast.AST, modules: dict) -> set:
    """Every module of the package that ``name`` imports, at module level or inside functions. ``from p import x``
    counts as importing p.x when that is a module, else p itself."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{name}: relative import"  # the package imports absolutely
            base = node.module
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, tree, modules) for name, (_, tree) in modules.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    # A package's __init__ importing its own submodules is not a cycle unless a submodule imports the package back.
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_core_imports_no_nemo_lightning_hydra_or_omegaconf():
    modules = _modules()
    stdlib = set(sys.stdlib_module_names)
    for name, (path, tree) in modules.items():
        if not name.startswith(CORE) or name == NEMO_BACKENDS:
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            for imported in names:
                top = imported.split(".")[0]
                assert top in stdlib or top in CORE_THIRD_PARTY or imported.startswith(CORE), (path, imported)


def test_modules_are_short_and_say_what_they_hold():
    for name, (path, tree) in _modules().items():
        lines = len(path.read_text().splitlines())
        assert lines <= MAX_LINES or name in LONG_BY_NEED, f"{path}: {lines} lines"
        doc = ast.get_docstring(tree)
        assert doc and len(doc.splitlines()[0]) > 20, f"{path}: no docstring saying what it holds"


def test_tests_do_not_import_other_test_modules():
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[-1].startswith("test_") for n in names), (path, names)
