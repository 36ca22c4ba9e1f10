"""The house's layering: nothing reaches back up the path a run takes.

layers -> models -> generation/train/evaluate -> cli/demo. Every import
statement in jaxmm (module level or inside a function, where lazy imports
hide) may only name a package of a lower rank, or its own package.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Rank of each top-level part of jaxmm: a part may import parts of lower rank only.
RANKS = {
    "errors": 0,
    "overrides": 1, "storage": 1,
    "config": 2,
    "registry": 3,
    "layers": 4, "audio_features": 4, "sharding": 4,
    "losses": 5, "lora": 5,
    "quantize": 6,  # uses lora.kernel_layout
    "models": 6,
    "convert": 7, "data": 7, "generation": 7,
    "evaluate": 8, "viz": 8,
    "train": 9, "kb": 9,
    "demo": 10, "compile": 10,
    "cli": 11,
    "__main__": 12,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "jaxmm" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: pathlib.Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "jaxmm":  # from jaxmm import models
                for alias in node.names:
                    yield node.lineno, f"jaxmm.{alias.name}"
            else:
                yield node.lineno, node.module


def test_every_part_of_the_package_has_a_rank():
    parts = {p.stem if p.is_file() else p.name for p in (ROOT / "jaxmm").iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    parts.discard("__init__")
    assert parts <= set(RANKS), f"give these a rank in RANKS: {sorted(parts - set(RANKS))}"


def test_imports_only_go_down_the_house():
    bad = []
    for path in sorted((ROOT / "jaxmm").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel == pathlib.Path("jaxmm/__init__.py"):
            continue  # lazy attribute access to every part, by design
        source = _part(".".join(rel.with_suffix("").parts))
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == source:
                continue
            if RANKS[target] >= RANKS[source]:
                bad.append(f"{rel}:{line} ({source}) imports {module} ({target})")
    assert not bad, "imports reaching up the house:\n" + "\n".join(bad)


@pytest.mark.parametrize("module, forbidden", [
    ("jaxmm.models", ("generation", "viz", "train", "demo", "evaluate", "cli", "convert")),
    ("jaxmm.layers", ("models", "generation", "train", "convert", "data")),
])
def test_importing_a_layer_loads_nothing_above_it(module, forbidden):
    code = (f"import sys, {module}; "
            "print('\\n'.join(m for m in sys.modules if m.startswith('jaxmm.') "
            "or m == 'tensorflow'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    loaded = {m.split(".")[1] if m.startswith("jaxmm.") else m for m in out}
    assert not loaded & set(forbidden), sorted(loaded & set(forbidden))
    assert "tensorflow" not in loaded  # the model zoo does not pull in TensorFlow
