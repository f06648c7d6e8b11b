"""The import layering of ``src/vseam`` (docs/architecture.md, Import layering), checked from the source's own imports:
a package imports only packages of lower layers, never one of its own layer or above."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "vseam"

# layer -> packages (top-level modules count as packages). Lower layers never import higher ones.
LAYERS = [
    ["utils", "stats"],  # stats: the statistics of every finding (McNemar, bootstrap, Monte Carlo p, AUROC)
    ["config"],
    ["validate"],  # every config value checkable without the model (and the keys' choices)
    ["data"],
    ["world"],
    ["models"],
    ["interventions"],
    ["runtime"],  # what every long job shares: chunks, resume, ranks and nodes, gather, Fabric launch, OOM halving
    ["attribution", "evaluation", "editing"],
    ["modulation", "tracing", "organism"],  # organism: its builds score POPE with evaluation's metrics
    ["study"],  # the head study: ablation, overlap, report (uses attribution and modulation's head choice)
    ["cli"],
    ["__init__"],  # the notebook API: vseam/__init__.py
]
LAYER = {pkg: i for i, pkgs in enumerate(LAYERS) for pkg in pkgs}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported vseam package) for every import in the file, at any depth (lazy imports too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "vseam"]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vseam" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
            elif parts == ["vseam"]:
                out.append((node.lineno, "__init__"))
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        src = _package(path)
        assert src in LAYER, f"{path.relative_to(SRC)}: package {src!r} has no layer in tests/test_layering.py"
        for line, tgt in _imports(path):
            if tgt == src:
                continue
            if tgt not in LAYER:
                bad.append(f"{path.relative_to(SRC)}:{line} imports unknown package vseam.{tgt}")
            elif LAYER[tgt] >= LAYER[src]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {src} (layer {LAYER[src]}) imports {tgt} "
                           f"(layer {LAYER[tgt]})")
    return bad


def test_imports_point_down_the_layers():
    assert _violations() == []


def test_the_check_sees_lazy_imports(tmp_path, monkeypatch):
    """The checker itself: a function-level import of a higher layer is found."""
    fake = tmp_path / "vseam"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "x.py").write_text("def f():\n    from vseam.modulation.run import run_train\n")
    (fake / "data" / "y.py").write_text("import vseam.utils.io\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    assert _violations() == ["data/x.py:2: data (layer 3) imports modulation (layer 9)"]
