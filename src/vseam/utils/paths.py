"""Where shipped files are: the configs and the organism checkpoints travel with the package (in a
checkout, ``src/vseam/configs`` and ``src/vseam/checkpoints`` link to the repository's folders; a wheel
carries copies), so a run finds them from any working directory."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../vseam
CONFIG_DIR = PACKAGE_DIR / "configs"
SHIPPED_PREFIXES = ("checkpoints/",)


def shipped(path: str | Path) -> Path:
    """``path`` as given when it exists (relative to the working directory) or is absolute; a relative
    path naming a shipped file (``checkpoints/organism/llava``) resolves from the package otherwise."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    if str(p).startswith(SHIPPED_PREFIXES) and (PACKAGE_DIR / p).exists():
        return PACKAGE_DIR / p
    return p


def is_shipped_name(path: str | Path) -> bool:
    """A relative path of the shipped kind (so a missing one is not a hub id to download)."""
    p = Path(path)
    return not p.is_absolute() and str(p).startswith(SHIPPED_PREFIXES)
