"""Which model: quality scores with their sources, the cost of each precision, ranking by purpose with reasons,
catalog metadata, and models users add to their catalog."""

from __future__ import annotations

import csv
import json
import re

import pytest
from click.testing import CliRunner
from hubserver import catalog_config, catalog_tensors, running_hub

from advisor import quality as Q
from advisor.cli import cli
from advisor.paths import data_dir
from advisor.sources import catalog

pytestmark = pytest.mark.usefixtures("seeded_hw")


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _rows(name: str) -> list[dict]:
    with open(data_dir() / name, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_every_quality_number_traces_to_a_listed_source():
    sources = (data_dir() / "SOURCES.md").read_text(encoding="utf-8")
    rows = _rows(Q.QUALITY_FILE)
    assert len(rows) > 1000

    def where(url: str) -> str:
        """The repository (GitHub) or site a link points to, as data/SOURCES.md lists it."""
        parts = url.split("/")
        return "/".join(parts[2:5]) if parts[2] == "github.com" else parts[2]

    for row in rows:
        assert float(row["score"]) == float(row["score"])  # a number, not nan
        assert row["date"] and re.match(r"^\d{4}-\d{2}(-\d{2})?$", row["date"]), row
        assert row["source_name"], row
        assert re.match(r"^https://[\w.-]+/", row["url"]), row
        assert f"`{where(row['url'])}`" in sources, f"{where(row['url'])} is not listed in data/SOURCES.md"
    for row in _rows(Q.QUANT_FILE):
        assert f"`{where(row['url'])}`" in sources


def test_mapped_sources_agree_with_their_anchor():
    for use in Q.USES:
        for m in Q.mappings(use):
            assert m.overlap >= Q.MIN_OVERLAP and m.rho >= Q.MIN_SPEARMAN and m.slope > 0


def test_a_score_is_the_anchor_blended_with_mapped_sources_and_none_without_any():
    s = Q.score("meta-llama/Llama-3.1-8B-Instruct", "coding")
    assert s is not None and s.anchored and s.sources[0].startswith("LMArena")
    assert any("BigCodeBench" in x or "EvalPlus" in x for x in s.sources)
    assert Q.score("nobody/never-evaluated-model", "coding") is None
    with pytest.raises(ValueError):
        Q.score("meta-llama/Llama-3.1-8B-Instruct", "poetry")


def test_quantization_costs_grow_as_bits_shrink():
    order = ["bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k"]
    costs = [Q.precision_penalty(p) for p in order]
    assert costs == sorted(costs) and costs[0] == 0 and costs[-1] > 50
    assert Q.precision_penalty("int8") < Q.precision_penalty("int4")


def test_every_catalog_model_has_metadata_with_tags_and_a_license_or_says_why_not():
    notes = {r["model_id"]: r["notes"] for r in _rows(Q.META_FILE)}
    for model_id in catalog.known_ids():
        meta = Q.meta(model_id)
        assert meta.tags, model_id
        assert meta.license or "license not found" in notes[model_id], model_id


def test_top_coding_on_a_4090_ranks_by_coding_quality_and_explains():
    result = run("recommend", "--top", "5", "--use", "coding", "--device", "RTX 4090", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["models"]
    assert len(rows) == 5
    scored = [r["quality"] for r in rows if r["quality"] is not None]
    assert scored == sorted(scored, reverse=True) and scored
    assert all(r["best"]["decode_tok_s"] >= 5 for r in rows)
    assert "higher coding score" in rows[0]["reason"]
    assert rows[0]["quality_sources"] and rows[0]["quality_urls"]


def test_filters_by_language_license_and_context():
    ko = json.loads(run("recommend", "--top", "5", "--lang", "ko", "--device", "H100 SXM5", "--json").output)
    assert ko["models"] and all("ko" in Q.meta(r["model"]).languages for r in ko["models"])
    free = json.loads(run("recommend", "--top", "8", "--license", "permissive", "--device", "RTX 4090",
                          "--json").output)  # fmt: skip
    assert free["models"] and all(Q.meta(r["model"]).permissive for r in free["models"])
    long = json.loads(run("recommend", "--top", "8", "--min-context", "128k", "--device", "RTX 4090", "--json").output)
    assert all(catalog.spec_from_catalog(r["model"]).max_context >= 131072 for r in long["models"])


def test_catalog_shows_its_snapshot_age_and_update_adds_a_model(monkeypatch, tmp_path):
    result = CliRunner().invoke(cli, ["catalog", "--json"])
    data = json.loads(result.output)
    assert data["snapshot"] and data["age_days"] >= 0 and len(data["models"]) == len(catalog.known_ids())
    gen = running_hub(monkeypatch)
    server = next(gen)
    try:
        smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
        server.add_repo("someone/new-model", config=catalog_config(smol), tensors=catalog_tensors(smol))
        added = run("catalog", "update", "someone/new-model")
        assert added.exit_code == 0 and "added someone/new-model" in added.output
    finally:
        gen.close()
    assert "someone/new-model" in catalog.known_ids() and catalog.is_user_model("someone/new-model")
    # offline again: the model answers from the user's catalog
    rec = run("recommend", "someone/new-model", "--json")
    assert rec.exit_code == 0 and json.loads(rec.output)["model"]["id"] == "someone/new-model"
