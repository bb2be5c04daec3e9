"""Turn whatever the user typed into a ModelSpec: a path, a catalog id, a Hub id, or a size label.

Order: an existing path (.gguf file, model folder, config.json); the offline catalog (exact,
instant, no network) unless a revision is asked for; the Hub for `org/name` ids (falling back to
the catalog when the network is down); a size label ('8B', '8x7B', '141B-A35B').
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from advisor.errors import GatedModelError, ModelNotFoundError, NameParseError, NetworkError
from advisor.spec import ModelSpec, ParamBreakdown, SizeLabel
from advisor.textutil import safe

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
# No model name, path or size label is this long (PATH_MAX is 4096 on Linux).
MAX_NAME = 4096


def _path_kind(path: Path) -> str | None:
    """ "dir", "file" (anything else that exists) or None; a name the filesystem refuses (too long, bad bytes)
    is no path."""
    try:
        if path.is_dir():
            return "dir"
        return "file" if path.exists() else None
    except (OSError, ValueError):
        return None


def resolve(model: str, *, revision: str | None = None, trust_remote_code: bool = False) -> ModelSpec:
    """The spec of `model`, read from metadata only. Raises an AdvisorError the user can act on."""
    from advisor.sources import catalog

    text = model.strip()
    if not text:
        raise ModelNotFoundError("No model given: name a Hub id, a folder, a .gguf file or a size label like 8B.")
    if len(text) > MAX_NAME:
        raise ModelNotFoundError(
            f"'{safe(text, 60)}' ({len(text):,} characters) is too long for a model name, path or size label: "
            "check the argument."
        )
    path = Path(text).expanduser()
    kind = _path_kind(path)
    if text.lower().endswith(".gguf"):
        from advisor.sources.gguf import spec_from_gguf

        return _checked(spec_from_gguf(path))
    if kind == "dir":
        from advisor.sources.local import spec_from_folder

        return _checked(spec_from_folder(path, trust_remote_code=trust_remote_code))
    if kind == "file" and path.suffix == ".json":
        from advisor.sources.config import load_config_file, spec_from_config

        spec = spec_from_config(load_config_file(path), model_id=str(path), source="config")
        return _checked(spec)

    if revision is None:
        spec = catalog.spec_from_catalog(text)
        if spec is not None:
            return _checked(spec)

    if _REPO_ID.match(text) and kind is None:
        from advisor.sources.hub import spec_from_hub

        try:
            return _checked(spec_from_hub(text, revision=revision, trust_remote_code=trust_remote_code))
        except NetworkError as exc:
            fallback = catalog.spec_from_catalog(text)
            if fallback is None:
                raise _suggesting(exc, text) from None
            return _checked(fallback.with_warnings(f"{exc} Answered from the offline catalog instead."))
        except (ModelNotFoundError, GatedModelError) as exc:  # (without a token the Hub answers 401 for a typo)
            raise _suggesting(exc, text) from None

    try:
        return spec_from_label(text)
    except NameParseError:
        if "/" in text or "\\" in text or text.startswith("."):
            raise ModelNotFoundError(
                f"'{safe(text, 120)}' is not an existing path, a catalog model or a Hub id of the form org/name: "
                "check it."
            ) from None
        raise _suggesting(
            ModelNotFoundError(
                f"Unknown model '{safe(text, 120)}': not a size label (like 8B or 8x7B), not in the offline catalog "
                "(see `advisor catalog`), and not a Hub id of the form org/name."
            ),
            text,
        ) from None


def _suggesting(exc: Exception, text: str) -> Exception:
    """`exc`, its message ending with the catalog ids spelled like `text` when there are any (the same class, so
    the exit code stays)."""
    from advisor.sources import catalog

    close = catalog.close_ids(text)
    if not close:
        return exc
    names = " or ".join(f"'{c}'" for c in close)
    return type(exc)(f"{exc} Did you mean {names}?")


def _checked(spec: ModelSpec) -> ModelSpec:
    from advisor.sources.crosscheck import cross_check

    return cross_check(spec)


def _nearest_catalog(label: SizeLabel) -> ModelSpec | None:
    """The catalog model closest in size (MoE to MoE, dense to dense): a template for the shape."""
    from advisor.sources import catalog

    moe = label.experts is not None or label.active_params < label.total_params
    best, best_gap = None, math.inf
    for model_id in catalog.known_ids():
        spec = catalog.spec_from_catalog(model_id)
        if spec is None or spec.is_moe != moe:
            continue
        gap = abs(math.log(spec.total_params / label.total_params))
        if gap < best_gap:
            best, best_gap = spec, gap
    return best


def spec_from_label(text: str) -> ModelSpec:
    """A spec from a size label alone. Exact only where the label names a catalog model's shape."""
    from advisor import names
    from advisor.sources import catalog

    label = names.parse_size(text)
    # An NxM label that names a catalog model's shape (8x7B -> Mixtral-8x7B) has that exact count.
    if label.upper_bound:
        token = label.label.lower()
        for model_id in catalog.known_ids():
            found = names.find_size_in_id(model_id)
            if found is not None and found.label.lower() == token:
                spec = catalog.spec_from_catalog(model_id)
                return dataclasses.replace(
                    spec,
                    id=text,
                    source="label",
                    label=label,
                    warnings=(
                        f"'{text}' is the shape of {model_id}: its exact count is {spec.total_params / 1e9:.1f}B "
                        f"({spec.active_params / 1e9:.1f}B active), not the label's {label.total_params / 1e9:.0f}B, "
                        "because the experts share attention and embeddings",
                    ),
                )
    template = _nearest_catalog(label)
    warnings = list(label.warnings)
    if template is None:
        return ModelSpec(
            id=text,
            source="label",
            exact=False,
            total_params=label.total_params,
            active_params=label.active_params,
            label=label,
            warnings=tuple(warnings),
        )
    scale = label.total_params / template.total_params
    params = template.params
    scaled = None
    if params is not None:
        scaled = ParamBreakdown(**{f.name: int(getattr(params, f.name) * scale) for f in dataclasses.fields(params)})
        e, k = template.num_experts, template.experts_per_token
        if scaled.routed_experts and e and k and e > k:
            # Keep the label's active count: unselected experts = total - active.
            routed = (label.total_params - label.active_params) * e // (e - k)
            share = scaled.routed_experts_linear / scaled.routed_experts
            scaled = dataclasses.replace(scaled, routed_experts=routed, routed_experts_linear=int(routed * share))
    warnings.append(
        f"'{text}' is a size label: layers, KV heads and context are guessed from the catalog model "
        f"closest in size ({template.id}); name the model for an exact answer"
    )
    return dataclasses.replace(
        template,
        id=text,
        source="label",
        exact=False,
        total_params=label.total_params,
        active_params=label.active_params,
        params=scaled,
        label=label,
        checkpoint_bytes=None,
        warnings=tuple(warnings),
    )
