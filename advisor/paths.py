"""Where advisor keeps its state: the hardware profile, the Hub metadata cache, the calibration store."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$ADVISOR_CACHE_DIR`, else `$XDG_CACHE_HOME/advisor`, else `~/.cache/advisor` (created)."""
    env = os.environ.get("ADVISOR_CACHE_DIR")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "advisor"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from advisor.errors import UsageError

        raise UsageError(
            f"Cannot use the cache folder {path} ({exc.strerror or exc}): set ADVISOR_CACHE_DIR to a writable folder."
        ) from None
    return path


def data_dir() -> Path:
    """The bundled data (catalog, accelerator table): `advisor/data` in a wheel, `data/` in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "data"
    return installed if installed.is_dir() else here.parent / "data"
