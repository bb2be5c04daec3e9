"""Compare the three parameter counts a model can have, and explain a disagreement.

1. the size in its name ("8B", "8x7B", "141B-A35B"), via `advisor.names.find_size_in_id`;
2. the config-based count (`spec.total_params`, when exact and built from the architecture);
3. the header count (sum of `spec.checkpoint_params_by_dtype`, from safetensors or GGUF headers).

Two counts more than 5% apart get one warning that names both figures and the usual cause.
"""

from __future__ import annotations

import dataclasses
import re

from advisor.spec import ModelSpec, SizeLabel

TOLERANCE = 0.05
PACKED_DTYPES = ("I32", "U8", "I8", "U32", "I16", "U16")


def fmt_params(n: int | float) -> str:
    """8030261248 -> '8.03B', 134515008 -> '135M'."""
    n = float(n)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.3g}{suffix}" if value < 100 else f"{value:.0f}{suffix}"
    return f"{n:.0f}"


def _apart(a: int, b: int) -> float:
    hi = max(a, b)
    return abs(a - b) / hi if hi else 0.0


def _label_for(spec: ModelSpec) -> SizeLabel | None:
    if spec.label is not None:
        return spec.label
    try:
        from advisor.names import find_size_in_id
    except ImportError:
        return None
    try:
        return find_size_in_id(spec.id)
    except Exception:  # a name that does not parse is no reason to fail the spec
        return None


def _config_count(spec: ModelSpec) -> int | None:
    """The architecture count: exact, and from a model build (a breakdown exists), not from headers."""
    if spec.exact and spec.params is not None and spec.total_params > 0:
        return spec.total_params
    return None


def cross_check(spec: ModelSpec) -> ModelSpec:
    """Return `spec` with its size label filled in and a warning per pair of counts > 5% apart."""
    label = _label_for(spec)
    config_count = _config_count(spec)
    header_count = sum(spec.checkpoint_params_by_dtype.values()) or None
    packed = any(d in PACKED_DTYPES for d in spec.checkpoint_params_by_dtype)
    warnings: list[str] = []

    active_only = label is not None and re.match(r"^a\d", label.label, re.IGNORECASE) is not None
    if label is not None and not active_only:
        reference, what = (config_count, "the config") if config_count else (header_count, "the checkpoint headers")
        if reference and not (what == "the checkpoint headers" and packed):
            gap = _apart(label.total_params, reference)
            if gap > TOLERANCE:
                if label.upper_bound:
                    cause = (
                        f"'{label.label}' is an upper bound: the experts share attention and embeddings, "
                        f"so e.g. 8x7B is 46.7B, not 56B."
                    )
                elif label.total_params > reference:
                    cause = "size labels are rounded or count parts (vision tower, draft layers) this spec omits."
                else:
                    cause = "size labels are rounded, and often leave out the embeddings."
                says = label.label
                if fmt_params(label.total_params).lower() != label.label.lower():
                    says += f" ({fmt_params(label.total_params)})"
                warnings.append(
                    f"The name of '{spec.id}' says {says} but "
                    f"{what} count{'s' if what == 'the config' else ''} {fmt_params(reference)} parameters "
                    f"({gap:.0%} apart): {cause} Using {fmt_params(reference)}."
                )
    if label is not None and (
        config_count
        and spec.is_moe
        and label.active_params
        and (active_only or label.active_params != label.total_params)
        and _apart(label.active_params, spec.active_params) > TOLERANCE
    ):
        warnings.append(
            f"The name of '{spec.id}' says {fmt_params(label.active_params)} active parameters but the config "
            f"gives {fmt_params(spec.active_params)} per token: using the config figure."
        )

    if config_count and header_count and _apart(config_count, header_count) > TOLERANCE:
        gap = _apart(config_count, header_count)
        if packed and (spec.quantization or header_count < config_count):
            cause = (
                "the checkpoint is quantized and packed: each I32 element holds 8 int4 values (U8: 2 nf4/fp4), "
                "so header elements undercount parameters. Weight bytes come from the headers."
            )
        elif header_count > config_count:
            cause = (
                "the checkpoint stores tensors the model build does not count: extra buffers, a tied lm_head "
                "saved twice, a vision tower, or extra (e.g. multi-token-prediction) layers. "
                "Weight bytes come from the headers; compute uses the config count."
            )
        else:
            cause = (
                "the checkpoint holds fewer tensors than the architecture builds: tied embeddings stored once, "
                "missing shards, or a config that does not match the weights."
            )
        warnings.append(
            f"'{spec.id}': the config counts {fmt_params(config_count)} parameters but the safetensors headers "
            f"hold {fmt_params(header_count)} ({gap:.0%} apart): {cause}"
        )

    new = [w for w in warnings if w not in spec.warnings]
    out = spec.with_warnings(*new) if new else spec
    if out.label is None and label is not None:
        out = dataclasses.replace(out, label=label)
    return out
