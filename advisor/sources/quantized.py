"""What a checkpoint's `quantization_config` says: a label, the precisions it loads in, and caveats.

The config says how the checkpoint was quantized; the safetensors headers say what the tensors really
are (I32 packed int4, U8 packed nf4, F8_E4M3, ...). Both are read, neither is trusted alone.

Precision names returned in `loadable_precisions`. Those in `advisor.precision.PRECISIONS` (bf16, int8,
int4, int4-dq) are priced today; the others name formats the table does not have yet:

    "gptq-int4", "gptq-int8", "gptq-int<b>"   GPTQ checkpoint, loaded as itself
    "awq-int4"                                 AWQ checkpoint, loaded as itself
    "int4", "int4-dq"                          bitsandbytes 4-bit checkpoint (double quant: -dq), as itself
    "int8"                                     bitsandbytes LLM.int8 checkpoint, as itself
    "fp8"                                      FP8 weights (E4M3), kept in fp8
    "mxfp4"                                    gpt-oss MXFP4 expert weights
    "ct-int4", "ct-int8"                       compressed-tensors integer weights, loaded as themselves
    "bf16"                                     dequantized at load time (fp8 / mxfp4 without kernels)
"""

from __future__ import annotations

from typing import Any

from advisor.errors import ConfigError

# safetensors dtypes that hold packed low-bit integers rather than one value per element
PACKED_INT_DTYPES = ("I32", "U8", "I8", "U32", "I16", "U16")
FP8_DTYPES = ("F8_E4M3", "F8_E5M2", "F8_E4M3FN", "F8_E8M0")


def _dominant_dtype(dtype_params: dict[str, int]) -> str | None:
    if not dtype_params:
        return None
    return max(dtype_params.items(), key=lambda kv: kv[1])[0]


def _bits(value: Any, field: str, default: int) -> int:
    """A bit width from the config: an int (a whole float, a digit string) from 1 to 64, else ConfigError."""
    if value is None or value == "" or value == 0:
        return default
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 4:
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise ConfigError(
            f"its quantization_config has {field} = {shown}, not a bit width from 1 to 64: fix config.json."
        )
    return value


def _short(value: Any) -> str:
    """A config value as one short line, for a label."""
    text = " ".join(str(value).split())
    return text if len(text) <= 40 else text[:37] + "..."


def _group(value: Any) -> str:
    if value is None or (not isinstance(value, bool) and value in (-1, "-1")):
        return "per-channel"
    return f"group {_short(value)}"


def _gptq(qc: dict[str, Any]) -> tuple[str, tuple[str, ...], list[str]]:
    bits = _bits(qc.get("bits"), "bits", 4)
    label = f"gptq {bits}-bit ({_group(qc.get('group_size'))})"
    warnings: list[str] = []
    if qc.get("desc_act"):
        warnings.append("GPTQ checkpoint uses act-order (desc_act): some kernels run it slower.")
    return label, (f"gptq-int{bits}",), warnings


def _awq(qc: dict[str, Any]) -> tuple[str, tuple[str, ...], list[str]]:
    bits = _bits(qc.get("bits", qc.get("w_bit")), "bits", 4)
    group = qc.get("group_size", qc.get("q_group_size"))
    version = qc.get("version")
    label = f"awq {bits}-bit ({_group(group)})"
    if version and str(version).lower() not in ("gemm",):
        label += f" [{_short(version).lower()}]"
    return label, (f"awq-int{bits}",), []


def _bitsandbytes(qc: dict[str, Any]) -> tuple[str, tuple[str, ...], list[str]]:
    if qc.get("load_in_4bit") or qc.get("_load_in_4bit"):
        kind = _short(qc.get("bnb_4bit_quant_type", "fp4")).lower()
        extra = ", double quant" if qc.get("bnb_4bit_use_double_quant") else ""
        label = f"bitsandbytes 4-bit ({kind}{extra})"
        # advisor.precision names: int4 = bitsandbytes 4-bit, int4-dq = with double quantization
        precision = "int4-dq" if qc.get("bnb_4bit_use_double_quant") else "int4"
        return (
            label,
            (precision,),
            ["Pre-quantized bitsandbytes 4-bit checkpoint: it loads only as itself and needs bitsandbytes."],
        )
    if qc.get("load_in_8bit") or qc.get("_load_in_8bit"):
        return (
            "bitsandbytes 8-bit (LLM.int8)",
            ("int8",),
            ["Pre-quantized bitsandbytes 8-bit checkpoint: it loads only as itself and needs bitsandbytes."],
        )
    return (
        "bitsandbytes (unknown bits)",
        ("int8", "int4"),
        ["bitsandbytes quantization_config names neither load_in_4bit nor load_in_8bit."],
    )


def _fp8(qc: dict[str, Any], dtype_params: dict[str, int]) -> tuple[str, tuple[str, ...], list[str]]:
    block = qc.get("weight_block_size")
    if isinstance(block, (list, tuple)) and block:
        label = "fp8 (block " + _short("x".join(str(b) for b in block)) + ")"
    else:
        label = "fp8 (per-tensor)" if qc.get("activation_scheme") == "static" else "fp8"
    warnings = [
        "FP8 weights need fp8 kernels (compute capability 8.9+: Ada, Hopper, Blackwell); "
        "elsewhere transformers dequantizes them to bf16, doubling the weight memory."
    ]
    if dtype_params and not any(d in dtype_params for d in FP8_DTYPES):
        warnings.append("quantization_config says fp8 but the safetensors headers hold no F8 tensors.")
    return label, ("fp8", "bf16"), warnings


def _mxfp4(qc: dict[str, Any], dtype_params: dict[str, int]) -> tuple[str, tuple[str, ...], list[str]]:
    label = "mxfp4 (experts)" if qc.get("modules_to_not_convert") else "mxfp4"
    warnings = [
        "MXFP4 expert weights need triton kernels on a recent GPU (Hopper-class or newer); "
        "elsewhere transformers dequantizes them to bf16, about 4x the expert memory."
    ]
    if dtype_params and "U8" not in dtype_params:
        warnings.append("quantization_config says mxfp4 but the safetensors headers hold no U8 (packed) tensors.")
    return label, ("mxfp4", "bf16"), warnings


def _compressed_tensors(
    qc: dict[str, Any], dtype_params: dict[str, int]
) -> tuple[str, tuple[str, ...] | None, list[str]]:
    fmt = str(qc.get("format") or qc.get("quantization_status") or "").lower()
    groups = qc.get("config_groups") or {}
    weights: dict[str, Any] = {}
    acts: dict[str, Any] | None = None
    for group in groups.values() if isinstance(groups, dict) else []:
        if isinstance(group, dict) and isinstance(group.get("weights"), dict):
            weights = group["weights"]
            acts = group.get("input_activations") if isinstance(group.get("input_activations"), dict) else None
            break
    bits = weights.get("num_bits")
    wtype = str(weights.get("type", "int")).lower()
    warnings: list[str] = []
    if not bits:
        if fmt == "dense" or not groups:
            return "compressed-tensors (dense)", None, []
        return (
            "compressed-tensors",
            ("compressed-tensors",),
            ["compressed-tensors config without weight bits: sizes come from the checkpoint headers."],
        )
    bits = _bits(bits, "num_bits", 4)
    abits = acts.get("num_bits") if acts else None
    scheme = f"w{bits}a{_short(abits) if abits else 16}"
    detail = []
    if weights.get("strategy") == "group" and weights.get("group_size"):
        detail.append(f"group {_short(weights['group_size'])}")
    elif weights.get("strategy"):
        detail.append(_short(weights["strategy"]))
    if wtype == "float":
        detail.insert(0, f"fp{bits}")
    label = f"compressed-tensors {scheme}" + (f" ({', '.join(detail)})" if detail else "")
    if wtype == "float" and bits == 8:
        loadable: tuple[str, ...] = ("fp8", "bf16")
        warnings.append(
            "FP8 weights need fp8 kernels (compute capability 8.9+); elsewhere they are dequantized to bf16."
        )
    elif wtype == "float" and bits == 4:
        loadable = ("ct-fp4",)
    else:
        loadable = (f"ct-int{bits}",)
    return label, loadable, warnings


def describe_quantization(
    config: dict[str, Any], dtype_params: dict[str, int]
) -> tuple[str | None, tuple[str, ...] | None, list[str]]:
    """Read `quantization_config` (and the header dtypes) into (label, loadable precisions, warnings).

    (None, None, []) for an ordinary 16/32-bit checkpoint that any precision can be made from.
    `loadable_precisions` None means "any".
    """
    config = config or {}
    dtype_params = dict(dtype_params or {})
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        # Some repos keep it elsewhere (e.g. text_config of a multimodal wrapper).
        text = config.get("text_config")
        qc = text.get("quantization_config") if isinstance(text, dict) else None
    if not isinstance(qc, dict):
        mlx = config.get("quantization")
        if isinstance(mlx, dict) and mlx.get("bits"):
            bits = _bits(mlx["bits"], "quantization.bits", 4)
            return (
                f"mlx {bits}-bit ({_group(mlx.get('group_size'))})",
                (f"mlx-int{bits}",),
                ["MLX-quantized checkpoint: it loads only in MLX on Apple silicon."],
            )
        return _from_headers_only(dtype_params)

    method = _short(qc.get("quant_method") or qc.get("quantization_method") or "").lower().replace("_", "-")
    if not method and ("load_in_4bit" in qc or "load_in_8bit" in qc):
        method = "bitsandbytes"
    loadable: tuple[str, ...] | None
    if method in ("gptq", "gptqmodel"):
        label, loadable, warnings = _gptq(qc)
    elif method in ("awq", "autoawq"):
        label, loadable, warnings = _awq(qc)
    elif method.startswith("bitsandbytes"):
        label, loadable, warnings = _bitsandbytes(qc)
    elif method in ("fp8", "fbgemm-fp8", "finegrained-fp8"):
        label, loadable, warnings = _fp8(qc, dtype_params)
    elif method == "mxfp4":
        label, loadable, warnings = _mxfp4(qc, dtype_params)
    elif method in ("compressed-tensors", "compressed_tensors"):
        label, loadable, warnings = _compressed_tensors(qc, dtype_params)
    else:
        name = method or "unknown"
        bits = qc.get("bits") or qc.get("nbits") or qc.get("weight_bits")
        label = f"{name} {_short(bits)}-bit" if bits else name
        loadable = (name,)
        warnings = [
            f"Quantization method '{name}' is not modelled: weight sizes come from the checkpoint headers, "
            "and it loads only as itself."
        ]

    packed = {d: n for d, n in dtype_params.items() if d in PACKED_INT_DTYPES}
    if "I32" in packed and method in ("gptq", "gptqmodel", "awq", "autoawq", "compressed-tensors"):
        warnings.append(
            "Header parameter counts are storage elements: each I32 element packs 8 int4 (or 4 int8) values, "
            "so they undercount the model's parameters."
        )
    return label, loadable, warnings


def _from_headers_only(dtype_params: dict[str, int]) -> tuple[str | None, tuple[str, ...] | None, list[str]]:
    """No quantization_config: flag checkpoints whose headers are nonetheless mostly low-precision."""
    if not dtype_params:
        return None, None, []
    total = sum(dtype_params.values()) or 1
    fp8 = sum(n for d, n in dtype_params.items() if d in FP8_DTYPES)
    packed = sum(n for d, n in dtype_params.items() if d in PACKED_INT_DTYPES)
    if fp8 / total > 0.5:
        return (
            "fp8",
            ("fp8", "bf16"),
            ["The headers hold F8 tensors but config.json has no quantization_config: treated as fp8 weights."],
        )
    if packed / total > 0.5:
        dom = _dominant_dtype({d: n for d, n in dtype_params.items() if d in PACKED_INT_DTYPES})
        return (
            f"unknown ({dom} tensors)",
            None,
            [
                f"Most weights are {dom} tensors but config.json has no quantization_config: "
                "the checkpoint is probably quantized by a tool advisor does not know; sizes come from the headers."
            ],
        )
    return None, None, []
