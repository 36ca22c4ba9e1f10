"""Layering: nothing under jaxmm/models reaches up the house (layers -> models ->
generation/train/evaluate -> cli/demo), neither at import time nor lazily inside a
function."""

import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ABOVE_MODELS = ("jaxmm.generation", "jaxmm.viz", "jaxmm.train", "jaxmm.evaluate", "jaxmm.demo",
                "jaxmm.cli")


def _imported_modules(path):
    """Every module named by an import statement in ``path`` (anywhere in the file)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            if node.module == "jaxmm":  # from jaxmm import viz
                yield from (f"jaxmm.{alias.name}" for alias in node.names)


def test_model_sources_import_nothing_above_models():
    offenders = []
    for folder, _, files in os.walk(os.path.join(ROOT, "jaxmm", "models")):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                offenders += [(os.path.relpath(path, ROOT), module)
                              for module in _imported_modules(path)
                              if module.startswith(ABOVE_MODELS)]
    assert offenders == []


def test_importing_models_loads_nothing_above_models():
    code = ("import sys, jaxmm.models; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('jaxmm.')))")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True)
    loaded = run.stdout.split()
    assert "jaxmm.models" in loaded
    assert [m for m in loaded if m.startswith(ABOVE_MODELS)] == []
