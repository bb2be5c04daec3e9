"""Where advisor keeps its state: the hardware profile, the Hub metadata cache, the calibration store."""

from __future__ import annotations

import os
from datetime import datetime, timezone
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


def set_aside(path: Path, companions: tuple[str, ...] = ()) -> Path:
    """Rename a corrupt state file to `<name>.corrupt-<UTC time>[-n]` (never delete what the user had);
    files named `<name><suffix>` for each suffix in `companions` follow it. Returns the new path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    for suffix in companions:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            try:
                os.replace(companion, target.with_name(target.name + suffix))
            except OSError:
                pass
    return target
