"""advisor.render: tables that compute nothing, and text from files echoed safely."""

from __future__ import annotations

import io

from advisor import render
from advisor.bench import BenchReport, BenchRow, Comparison
from advisor.spec import Device, Hardware, ModelSpec

HW = Hardware(devices=(Device("cpu", "Test CPU", 16 * 2**30, 20.0, "measured"),), source="probe")


def console() -> tuple[render.SafeConsole, io.StringIO]:
    buf = io.StringIO()
    return render.SafeConsole(file=buf, width=200, force_terminal=False), buf


def test_markup_and_escapes_from_files_print_as_plain_text():
    out, buf = console()
    spec = ModelSpec(
        id="[link=http://x]click[/link]\x1b]0;title\x07", source="local", exact=True, total_params=10**9,
        active_params=10**9, model_type="llama\x1b[2J", native_dtype="[red]",
    )  # fmt: skip
    out.print(render.model_summary(spec))
    out.print("cell [bold]x[/bold] \x1b[31mred")
    text = buf.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "[link=http://x]click[/link]" in text and "[bold]x[/bold]" in text and "[red]" in text


def test_recommendation_table_keeps_its_columns():
    from advisor.recommend import recommend
    from advisor.sources import resolve

    rec = recommend(resolve("HuggingFaceTB/SmolLM2-135M-Instruct"), HW, context=2048)
    out, buf = console()
    err, _ = console()
    render.print_recommendation(rec, out, err)
    text = buf.getvalue()
    for column in ("precision", "runtime", "placement", "weights GB", "KV GB", "total GB", "fits", "max context",
                   "decode tok/s", "TTFT"):  # fmt: skip
        assert column in text
    assert "Recommended:" in text and "Why:" in text


def test_bench_rows_show_runtime_and_ratio():
    row = BenchRow("q4_0", runtime="llama.cpp", placement="cpu", load_s=0.4,
                   comparisons=[Comparison("decode@64", 70.0, 63.0, "tok/s", 0.05)])  # fmt: skip
    failed = BenchRow("int8", status="unsupported", message="needs \x1b[2J bitsandbytes")
    out, buf = console()
    render.print_bench_row(row, out)
    render.print_bench_row(failed, out)
    render.print_bench_summary(BenchReport("m", "gguf", HW, [row, failed]), out)
    text = buf.getvalue()
    assert "q4_0 (llama.cpp) on cpu" in text and "1.11" in text and "\x1b" not in text
    assert "int8 (transformers): unsupported: needs" in text
