"""Precisions as data: one table of how each format stores a weight.

Float and bitsandbytes formats are described here; GGUF block sizes come from gguf-py's own
`GGML_QUANT_SIZES` table (block size in weights, bytes per block), so Q4_K costs its real
4.5 bits per weight and nf4 its real 4 bits plus block scales, not a guessed half byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Precision:
    name: str  # what the user types: fp32, bf16, int4, q4_k_m ...
    runtime: str  # transformers | llama.cpp
    kind: str  # float | bnb8 | bnb4 | gguf
    bytes_per_param: float  # for float kinds; nominal for the others (display only)
    quality_rank: int  # higher is closer to the trained weights
    description: str
    gguf_type: str | None = None  # base GGML type, for gguf kinds
    gguf_mix: str | None = None  # "M": llama.cpp's *_M recipe (some tensors one type higher)
    double_quant: bool = False  # bnb4: quantize the absmax scales too


# NOTE: quality ranks order formats by how much they round the weights (bits per weight and
# block-scale design): fp32 and the 16-bit formats reproduce a bf16-trained model exactly; 8-bit
# formats lose ~0.1% perplexity, Q6_K/Q5_K_M little more, 4-bit formats measurably more
# (llama.cpp's published perplexity tables for LLaMA; bitsandbytes' QLoRA paper for nf4).
# `advisor bench --quality` measures the real cost per model.
PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "transformers", "float", 4.0, 100, "32-bit float"),
        Precision("bf16", "transformers", "float", 2.0, 100, "bfloat16"),
        Precision("fp16", "transformers", "float", 2.0, 99, "float16 (may overflow on bf16-trained models)"),
        Precision("int8", "transformers", "bnb8", 1.0, 80, "bitsandbytes LLM.int8"),
        Precision("int4", "transformers", "bnb4", 0.5, 55, "bitsandbytes nf4, blocksize 64"),
        Precision(
            "int4-dq", "transformers", "bnb4", 0.5, 55, "bitsandbytes nf4 with double quantization", double_quant=True
        ),
        Precision("gguf-f32", "llama.cpp", "gguf", 4.0, 100, "GGUF F32 (unquantized)", gguf_type="F32"),
        Precision("gguf-bf16", "llama.cpp", "gguf", 2.0, 100, "GGUF BF16 (unquantized)", gguf_type="BF16"),
        Precision("gguf-f16", "llama.cpp", "gguf", 2.0, 99, "GGUF F16 (unquantized)", gguf_type="F16"),
        Precision("q8_0", "llama.cpp", "gguf", 1.0625, 82, "GGUF Q8_0", gguf_type="Q8_0"),
        Precision("q6_k", "llama.cpp", "gguf", 0.8203, 76, "GGUF Q6_K", gguf_type="Q6_K"),
        Precision("q5_k_m", "llama.cpp", "gguf", 0.6875, 70, "GGUF Q5_K_M", gguf_type="Q5_K", gguf_mix="M"),
        Precision("q5_1", "llama.cpp", "gguf", 0.75, 68, "GGUF Q5_1", gguf_type="Q5_1"),
        Precision("q5_0", "llama.cpp", "gguf", 0.6875, 66, "GGUF Q5_0", gguf_type="Q5_0"),
        Precision("q4_k_m", "llama.cpp", "gguf", 0.5625, 62, "GGUF Q4_K_M", gguf_type="Q4_K", gguf_mix="M"),
        Precision("iq4_xs", "llama.cpp", "gguf", 0.5313, 60, "GGUF IQ4_XS", gguf_type="IQ4_XS"),
        Precision("q4_1", "llama.cpp", "gguf", 0.625, 55, "GGUF Q4_1", gguf_type="Q4_1"),
        Precision("q4_0", "llama.cpp", "gguf", 0.5625, 50, "GGUF Q4_0", gguf_type="Q4_0"),
        Precision("q3_k_m", "llama.cpp", "gguf", 0.4297, 42, "GGUF Q3_K_M", gguf_type="Q3_K", gguf_mix="M"),
        Precision("q2_k", "llama.cpp", "gguf", 0.3281, 28, "GGUF Q2_K", gguf_type="Q2_K"),
    )
}

TRANSFORMERS_PRECISIONS = tuple(n for n, p in PRECISIONS.items() if p.runtime == "transformers")
GGUF_PRECISIONS = tuple(n for n, p in PRECISIONS.items() if p.runtime == "llama.cpp")

# Bits per element of every dtype that appears in checkpoints and caches: the safetensors dtypes (the format's
# own names: numel x bits must equal the bytes between a tensor's offsets), then the names configs and
# advisor use. The one table: the safetensors reader, the Hub summary and the cost model all read it.
DTYPE_BITS: dict[str, int] = {
    "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F32": 32, "I32": 32, "U32": 32, "F16": 16, "BF16": 16,
    "I16": 16, "U16": 16, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "I8": 8, "U8": 8, "BOOL": 8,
    "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
    "float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "fp32": 32, "fp16": 16, "bf16": 16, "fp8": 8,
    "int8": 8,
}  # fmt: skip


def dtype_bytes(name: str, default: float | None = None) -> float:
    """Bytes per element of a dtype named as safetensors or a config names it (F4 is half a byte); `default` for
    an unknown name (KeyError when none is given)."""
    bits = DTYPE_BITS.get(name)
    if bits is None:
        if default is None:
            raise KeyError(f"unknown dtype {name!r}")
        return default
    return bits / 8


@cache
def gguf_type_size(type_name: str) -> tuple[int, int]:
    """(weights per block, bytes per block) of a GGML type, from gguf-py's table."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType[type_name.upper()]
    except KeyError:
        raise KeyError(f"unknown GGML type {type_name!r}") from None
    return GGML_QUANT_SIZES[qtype]


def gguf_bytes(type_name: str, n_elements: int) -> int:
    """Bytes that `n_elements` weights take in GGML type `type_name` (whole blocks)."""
    block, size = gguf_type_size(type_name)
    return -(-n_elements // block) * size


def gguf_bits_per_weight(type_name: str) -> float:
    block, size = gguf_type_size(type_name)
    return size * 8 / block


# The GGUF file as it is on disk (its own mix of types), run by llama.cpp.
GGUF_FILE = "gguf-file"
_GGUF_FILE = Precision(GGUF_FILE, "llama.cpp", "gguf", 0.0, 60, "the GGUF file as it is")


def gguf_base_type(file_type: str) -> tuple[str, str | None]:
    """'Q4_K_M' -> ('Q4_K', 'M'); 'Q4_1' -> ('Q4_1', None): a llama.cpp file type's base tensor type."""
    name = file_type.upper()
    try:
        gguf_type_size(name)
        return name, None
    except KeyError:
        pass
    for suffix in ("_XL", "_XS", "_S", "_M", "_L"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            try:
                gguf_type_size(base)
                return base, suffix[1:]
            except KeyError:
                break
    return "Q8_0", None


def gguf_quality(type_name: str) -> int:
    """Quality rank of a GGUF file type: the table's rank where it has one (q4_k_m), else by the base
    type's bits per weight (Q8_0 ~ 82, Q4_0 ~ 50)."""
    known = PRECISIONS.get(type_name.lower())
    if known is not None and known.kind == "gguf":
        return known.quality_rank
    type_name = gguf_base_type(type_name)[0]
    try:
        bits = gguf_bits_per_weight(type_name)
    except KeyError:
        return 50
    return max(10, min(95, round(82 - (8.5 - bits) * 8)))


# A checkpoint already quantized (GPTQ, AWQ, FP8, MXFP4, compressed-tensors...), loaded as it is.
CHECKPOINT = "checkpoint"


def _checkpoint_precision(spec) -> Precision:
    label = (spec.quantization or "") if spec is not None else ""
    low = label.lower()
    # NOTE: ranks as for the table's formats of the same width: 8-bit ~ int8, fp8 a little better
    # (per-tensor float scales), 4-bit group-quantized (GPTQ/AWQ, group 128) a little better than nf4.
    if "fp8" in low or "float8" in low:
        rank = 85
    elif "8" in low.replace("fp8", ""):
        rank = 80
    elif "mxfp4" in low:
        rank = 60
    elif "4" in low:
        rank = 58
    else:
        rank = 50
    return Precision(CHECKPOINT, "transformers", "prequant", 0.0, rank, f"the checkpoint as quantized ({label or '?'})")


# One GGUF file of a repo that holds several quantizations: "gguf:NAME.gguf".
GGUF_PREFIX = "gguf:"
_FILE_TYPE = None


def gguf_type_in_name(filename: str) -> str | None:
    """The llama.cpp file type written in a GGUF file name ('...-Q4_K_M.gguf' -> 'Q4_K_M'), or None."""
    global _FILE_TYPE
    if _FILE_TYPE is None:
        _FILE_TYPE = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[0-9A-Z]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)
    found = _FILE_TYPE.findall(filename.rsplit("/", 1)[-1].removesuffix(".gguf"))
    return found[-1].upper() if found else None


# Split GGUF files: NAME-00001-of-00003.gguf (llama.cpp's gguf-split naming); the parts count as one model.
GGUF_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")


def gguf_file_groups(files: dict[str, int]) -> dict[str, tuple[list[str], int]]:
    """first file -> (all parts, total bytes) for the GGUF files among `files` (name -> bytes): the parts of a
    split model (name-00001-of-00003.gguf ...) count as one model."""
    groups: dict[str, list[str]] = {}
    for name in sorted(files):
        if not name.endswith(".gguf"):
            continue
        m = GGUF_SPLIT.match(name.rsplit("/", 1)[-1])
        key = f"{name.rsplit('/', 1)[0] if '/' in name else ''}/{m['stem']}|{m['count']}" if m else name
        groups.setdefault(key, []).append(name)
    return {parts[0]: (parts, sum(files[p] for p in parts)) for parts in groups.values()}


def get(name: str, spec=None) -> Precision:
    """The precision called `name` (case-insensitive); KeyError if there is none.

    `gguf-file` is the GGUF file as it is; with its spec, its description and rank come from the
    file's dominant tensor type.
    """
    key = name.lower()
    if key.startswith(GGUF_PREFIX):
        filename = name[len(GGUF_PREFIX) :]
        ftype = gguf_type_in_name(filename) or "Q8_0"
        base, mix = gguf_base_type(ftype)
        return Precision(name, "llama.cpp", "gguf", 0.0, gguf_quality(ftype), f"GGUF file {filename}", base, mix)
    if key == CHECKPOINT:
        return _checkpoint_precision(spec)
    if key == GGUF_FILE:
        qtype = (spec.quantization or "").split()[-1] if spec is not None and spec.quantization else None
        if qtype:
            base, mix = gguf_base_type(qtype)
            return Precision(GGUF_FILE, "llama.cpp", "gguf", 0.0, gguf_quality(base), f"GGUF file ({qtype})", base, mix)
        return _GGUF_FILE
    return PRECISIONS[key]


def names() -> tuple[str, ...]:
    return tuple(PRECISIONS)
