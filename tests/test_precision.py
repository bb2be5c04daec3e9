"""advisor.precision: the one table of formats, GGUF block sizes from gguf-py, file-name parsing."""

from __future__ import annotations

import pytest

from advisor import precision as P


@pytest.mark.parametrize(
    ("name", "block", "size"),
    [("Q4_0", 32, 18), ("Q8_0", 32, 34), ("Q4_K", 256, 144), ("Q6_K", 256, 210), ("F16", 1, 2)],
    ids=["q4_0-18-bytes-per-32", "q8_0", "q4_k-4.5-bits", "q6_k-6.56-bits", "f16"],
)
def test_gguf_block_sizes_come_from_gguf_py(name, block, size):
    assert P.gguf_type_size(name) == (block, size)
    assert P.gguf_bytes(name, block * 10 + 1) == 11 * size  # whole blocks only


def test_every_table_precision_has_a_known_shape():
    for name, prec in P.PRECISIONS.items():
        assert P.get(name) is prec and P.get(name.upper()) is prec
        if prec.kind == "gguf":
            P.gguf_type_size(prec.gguf_type)  # a type gguf-py knows
    with pytest.raises(KeyError):
        P.get("int3")


@pytest.mark.parametrize(
    ("filename", "ftype"),
    [
        ("Llama-3-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("model.IQ4_XS.gguf", "IQ4_XS"),
        ("qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf", "Q8_0"),  # split file: the type, not the part number
        ("phi-3-mini-4k-instruct-fp16.gguf", None),  # "fp16" is not llama.cpp's name (F16)
        ("gemma-2-9b-it-BF16.gguf", "BF16"),
    ],
)
def test_file_type_in_a_gguf_name(filename, ftype):
    assert P.gguf_type_in_name(filename) == ftype


def test_quality_ranks_follow_bits_per_weight():
    ranks = [P.gguf_quality(t) for t in ("Q2_K", "Q3_K", "Q4_0", "Q5_0", "Q6_K", "Q8_0")]
    assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
    assert P.get("q8_0").quality_rank > P.get("q4_k_m").quality_rank > P.get("q4_0").quality_rank


def test_one_dtype_table_with_sub_byte_formats():
    assert P.dtype_bytes("BF16") == 2 and P.dtype_bytes("F8_E4M3") == 1
    assert P.dtype_bytes("F4") == 0.5 and P.dtype_bytes("F6_E2M3") == 0.75  # not priced as 2 bytes
    assert P.dtype_bytes("nonsense", default=2) == 2
    with pytest.raises(KeyError):
        P.dtype_bytes("nonsense")


def test_split_gguf_files_count_once():
    files = {
        "m-Q4_K_M-00001-of-00002.gguf": 10,
        "m-Q4_K_M-00002-of-00002.gguf": 5,
        "m-Q8_0.gguf": 30,
        "README.md": 1,
    }
    groups = P.gguf_file_groups(files)
    assert groups == {
        "m-Q4_K_M-00001-of-00002.gguf": (["m-Q4_K_M-00001-of-00002.gguf", "m-Q4_K_M-00002-of-00002.gguf"], 15),
        "m-Q8_0.gguf": (["m-Q8_0.gguf"], 30),
    }


def test_a_sibling_gguf_file_is_a_precision_of_its_own():
    prec = P.get("gguf:m-Q5_K_M.gguf")
    assert prec.runtime == "llama.cpp" and prec.gguf_type == "Q5_K" and prec.gguf_mix == "M"
