"""The offline catalog: exact specs of popular chat models, precomputed from their configs.

`data/catalog.json` is built by `python -m advisor.sources.catalog` from `data/configs/*.json`
(a meta-device build of each, checked against `data/param_counts.csv`), so that `recommend` on a
catalog model answers offline, in well under a second, without importing torch.
"""

from __future__ import annotations

import csv
import json
import sys
from functools import lru_cache
from pathlib import Path

from advisor.paths import data_dir
from advisor.spec import ModelSpec, model_spec_from_json

CATALOG_FILE = "catalog.json"
INFO_FILE = "catalog_info.json"
USER_FILE = "user_catalog.json"  # in advisor's cache: models `advisor catalog update` added


def config_path(model_id: str) -> Path:
    return data_dir() / "configs" / (model_id.replace("/", "__") + ".json")


@lru_cache(maxsize=1)
def _shipped() -> dict[str, dict]:
    path = data_dir() / CATALOG_FILE
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def _user_path() -> Path:
    from advisor.paths import cache_dir

    return cache_dir() / USER_FILE


def _user() -> dict[str, dict]:
    """Models the user added with `advisor catalog update` (a damaged file counts as empty, and is kept aside)."""
    from advisor.fileio import MAX_STATE_BYTES, read_json_file

    path = _user_path()
    if not path.exists():
        return {}
    try:
        data = read_json_file(path, limit=MAX_STATE_BYTES)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _load() -> dict[str, dict]:
    return {**_shipped(), **_user()}


def snapshot() -> dict:
    """{"date": "YYYY-MM-DD", "models": N} of the shipped catalog."""
    path = data_dir() / INFO_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def add_user_model(spec: ModelSpec) -> Path:
    """Keep `spec` in the user's catalog (advisor's cache), beside the shipped snapshot."""
    from advisor.fileio import locked, write_atomic

    path = _user_path()
    with locked(path):
        data = _user()
        data[spec.id] = spec.to_json()
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
    return path


def is_user_model(model_id: str) -> bool:
    return model_id in _user()


def known_ids() -> list[str]:
    """Every model id in the catalog."""
    return sorted(_load())


def find(model_id: str) -> str | None:
    """The catalog id matching `model_id` (case-insensitive; a bare name if unique), else None."""
    catalog = _load()
    if model_id in catalog:
        return model_id
    lowered = model_id.lower().strip("/")
    exact = [k for k in catalog if k.lower() == lowered]
    if exact:
        return exact[0]
    bare = [k for k in catalog if k.lower().split("/")[-1] == lowered]
    return bare[0] if len(bare) == 1 else None


def close_ids(model_id: str, n: int = 3) -> list[str]:
    """Catalog ids spelled like `model_id` (a typo, another case, a missing organisation), closest first."""
    import difflib

    catalog = _load()
    by_lower: dict[str, str] = {}
    for key in catalog:
        by_lower.setdefault(key.lower(), key)
        by_lower.setdefault(key.lower().split("/")[-1], key)
    wanted = model_id.lower().strip().strip("/")
    scored = sorted(((difflib.SequenceMatcher(None, wanted, k).ratio(), k) for k in by_lower), reverse=True)
    if not scored or scored[0][0] < 0.8:
        return []
    best = scored[0][0]
    # only the names about as close as the best one: a typo of one model, not its whole family
    found = [by_lower[k] for ratio, k in scored if ratio >= best - 0.02 and by_lower[k].lower() != wanted]
    return list(dict.fromkeys(found))[:n]


def spec_from_catalog(model_id: str) -> ModelSpec | None:
    """The precomputed spec of a catalog model, or None when the id is not in the catalog. A pre-quantized
    checkpoint (FP8, MXFP4, AWQ ... re-releases) says so from its config's `quantization_config`, as the same
    repository read from a folder or the Hub does: it is served and loaded as itself, not as any precision."""
    key = find(model_id)
    if key is None:
        return None
    spec = model_spec_from_json(_load()[key])
    path = config_path(key)
    if spec.quantization is None and path.is_file():
        import dataclasses

        from advisor.sources.quantized import describe_quantization

        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            label, loadable, warnings = describe_quantization(config if isinstance(config, dict) else {}, {})
        except (OSError, ValueError):
            return spec
        if label is not None:
            spec = dataclasses.replace(spec, quantization=label, loadable_precisions=loadable)
            spec = spec.with_warnings(*[w for w in warnings if w not in spec.warnings])
    return spec


def known_counts() -> dict[str, tuple[int, int | None]]:
    """model id -> (total, active or None) from data/param_counts.csv (published counts)."""
    out = {}
    with open(data_dir() / "param_counts.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            active = int(row["active_params"]) if row["active_params"] else None
            out[row["model_id"]] = (int(row["total_params"]), active)
    return out


def build() -> dict[str, dict]:
    """Build every config in data/configs on the meta device (needs torch); check the known counts."""
    from advisor.sources.config import load_config_file, spec_from_config

    counts = known_counts()
    out: dict[str, dict] = {}
    for path in sorted((data_dir() / "configs").glob("*.json")):
        model_id = path.stem.replace("__", "/")
        spec = spec_from_config(load_config_file(path), model_id=model_id, source="catalog", cache=False)
        if model_id in counts:
            total, active = counts[model_id]
            if spec.total_params != total or spec.active_params != (active or total):
                raise SystemExit(
                    f"{model_id}: built {spec.total_params}/{spec.active_params}, published {total}/{active}"
                )
        out[model_id] = spec.to_json()
    return out


def main() -> None:
    import datetime

    data = build()
    target = data_dir() / CATALOG_FILE
    target.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    info = {"date": datetime.date.today().isoformat(), "models": len(data)}
    (data_dir() / INFO_FILE).write_text(json.dumps(info) + "\n", encoding="utf-8")
    print(f"wrote {len(data)} models to {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
