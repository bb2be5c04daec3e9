"""Every GGUF type advisor prices, made for real from the embedded model by llama.cpp's own quantizer, against
advisor's estimate: the file's tensor bytes, and tensor by tensor, the type llama.cpp chose against the type
advisor's recipe model predicts.

    python benchmarks/gguf_sizes.py [--types q4_k_m,q8_0] [--json OUT] [GGUF]

Target (issue 14): every made file's bytes within 0.5% of the estimate. Files are kept in advisor's cache, so
a second run only reads them. Needs a working llama-cpp-python build (`scripts/setup.sh`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET = 0.005


def _role(name: str) -> str:
    """The recipe role of a GGUF tensor name."""
    if name.endswith("attn_v.weight"):
        return "attn_v"
    if name.endswith("attn_output.weight"):
        return "attn_output"
    if name.endswith("ffn_down.weight"):
        return "ffn_down"
    if name in ("output.weight", "token_embd.weight"):
        return name.split(".")[0]
    return "matrix" if name.endswith(".weight") else "other"


def check(source: Path, precision: str) -> dict:
    from gguf import GGUFReader

    from advisor import artifacts
    from advisor import precision as P
    from advisor.costmodel import memory as M
    from advisor.sources.gguf import spec_from_gguf

    spec = spec_from_gguf(source)
    prec = P.get(precision, spec)
    # The file is its tensors plus a header (metadata, tokenizer, tensor index) that every type shares: the
    # source's header size, read from the source itself.
    src = GGUFReader(str(source))
    header = source.stat().st_size - sum(int(t.n_bytes) for t in src.tensors)
    made = artifacts.quantized_gguf(source, prec)
    reader = GGUFReader(str(made))
    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    estimate = M.weight_bytes(spec, precision).total
    # Tensor by tensor: the types llama.cpp wrote for the decoder matrices, against the recipe's prediction.
    ftype = M.gguf_file_type(prec)
    params = M._breakdown_or_guess(spec)
    predicted = Counter()
    for type_name, n in M._gguf_layer_tensors(spec, params, ftype):
        if n:
            predicted[type_name] += n
    written = Counter()
    for t in reader.tensors:
        if _role(t.name) in ("attn_v", "attn_output", "ffn_down", "matrix") and len(t.shape) >= 2:
            written[t.tensor_type.name] += int(t.n_elements)
    out_type, emb_type = M._gguf_head_types(spec, params, ftype)
    heads = {t.name: t.tensor_type.name for t in reader.tensors if t.name in ("output.weight", "token_embd.weight")}
    head_ok = heads.get("output.weight", out_type) == out_type and heads.get("token_embd.weight") == emb_type
    return {
        "precision": precision,
        "file": str(made),
        "file_bytes": made.stat().st_size,
        "tensor_bytes": tensor_bytes,
        "estimate_bytes": estimate,
        "error": estimate / tensor_bytes - 1,
        "file_estimate_bytes": estimate + header,
        "file_error": (estimate + header) / made.stat().st_size - 1,
        "layer_types_written": dict(written),
        "layer_types_predicted": dict(predicted),
        "layer_types_match": written == predicted,
        "head_types": heads,
        "head_types_predicted": {"output.weight": out_type, "token_embd.weight": emb_type},
        "head_types_match": head_ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", nargs="?", default=None, help="Default: the embedded SmolLM2-135M Q4_1.")
    parser.add_argument(
        "--types",
        default="gguf-f32,gguf-f16,gguf-bf16,q8_0,q6_k,q5_k_m,q5_1,q5_0,q4_k_m,iq4_xs,q4_1,q4_0,q3_k_m,q2_k",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from advisor.engines import llamacpp
    from advisor.paths import embedded_gguf

    if not llamacpp.usable():
        print(llamacpp.unavailable_reason())
        return 2
    source = Path(args.gguf) if args.gguf else embedded_gguf()
    rows = []
    for precision in args.types.split(","):
        row = check(source, precision.strip())
        rows.append(row)
        print(
            f"{row['precision']:10} tensors {row['tensor_bytes']:>12,} B est {row['estimate_bytes']:>12,} B "
            f"{row['error']:+.3%}  file {row['file_bytes']:>12,} B est {row['file_estimate_bytes']:>12,} B "
            f"{row['file_error']:+.3%}  layer types {'match' if row['layer_types_match'] else 'DIFFER'}  "
            f"head {'match' if row['head_types_match'] else 'DIFFERS'}"
        )
        if not row["layer_types_match"]:
            print(f"    written {row['layer_types_written']}\n    recipe  {row['layer_types_predicted']}")
        if not row["head_types_match"]:
            print(f"    written {row['head_types']}\n    recipe  {row['head_types_predicted']}")
    within = sum(abs(r["error"]) <= TARGET and abs(r["file_error"]) <= TARGET for r in rows)
    typed = sum(r["layer_types_match"] for r in rows)
    print(f"\n{within}/{len(rows)} files within {TARGET:.1%} of the estimate (tensor bytes and file bytes); "
          f"{typed}/{len(rows)} with every layer tensor of the predicted type")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0 if within == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
