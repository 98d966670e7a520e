"""`uld demo` end to end on a very small world: three files, six rows, and a reused cache."""

import json

import pytest

from uld.audit import AuditSettings
from uld.data.records import load_split
from uld.studies.demo import ROWS, average, demo_settings, run_demo, spread
from uld.studies.pipeline import ModelConfig, PipelineConfig
from uld.world import WorldConfig


def _settings():
    s = demo_settings(quick=True)
    s["pipeline"] = PipelineConfig(
        world=WorldConfig(num_authors=10, qa_per_author=4, num_classic_authors=4, num_arithmetic=4),
        model=ModelConfig(hidden=32, layers=4, intermediate=64, heads=4, vocab=400),
        pretrain_epochs=2, finetune_epochs=2, finetune_lr=3e-3, eval_max_new_tokens=8,
    )
    s["recipes"] = {
        "uld": {"lr": 1e-3, "epochs": 1, "stop_forget_prob": 0.9, "num_layers": 2, "lora_rank": 0},
        "ga": {"lr": 3e-5, "epochs": 1}, "gd": {"lr": 3e-5, "epochs": 1}, "npo": {"lr": 3e-5, "epochs": 1},
    }
    # the audit with tiny budgets: 2 samples a question, 2 relearning steps, one bit width
    s["audit"] = AuditSettings(max_new_tokens=8, leak_k=2, relearn_steps=2, bits=(4,), batch_size=8)
    return s


@pytest.mark.slow
def test_demo_end_to_end_and_cache_reuse(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "out"
    results = run_demo(out, cache, settings=_settings())
    assert set(results) == set(ROWS)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["results"]) == set(ROWS)
    for row in saved["results"].values():
        assert 0 <= row["forget_quality"] <= 1 and 0 <= row["model_utility"] <= 1
    assert saved["results"]["uld"]["train_seconds"] > 0 and saved["results"]["target"]["train_seconds"] is None
    assert "| target |" in (out / "REPORT.md").read_text()
    assert (out / "fq_vs_utility.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not any(saved["pipeline_reused"].values()) and len(saved["pipeline_reused"]) == 6
    # Target and retain model fine-tune on their own authors' QA, 2 training paraphrases of each
    # answer, and the general knowledge; the retain model never sees a forget10 question.
    data = cache / "data"
    n = {s: len(load_split(data, s)) for s in ("full", "retain90", "forget10", "general")}
    target_stage = json.loads((cache / "target" / "stage.json").read_text())
    retain_stage = json.loads((cache / "retain" / "stage.json").read_text())
    assert target_stage["records"] == 3 * n["full"] + n["general"]
    assert retain_stage["records"] == 3 * n["retain90"] + n["general"] == 3 * (n["full"] - n["forget10"]) + n["general"]

    assert [len(saved["per_seed"][m]) for m in ("uld", "ga", "gd", "npo")] == [1, 1, 1, 1]
    assert saved["spread"]["uld"]["model_utility"] is None  # one seed: no spread
    assert saved["per_seed"]["uld"][0]["model_utility"] == saved["results"]["uld"]["model_utility"]

    assert saved["machine"]["torch_threads"] >= 1 and "isa" in saved["machine"]
    assert "## Machine" in (out / "REPORT.md").read_text()

    # Each method's seed-0 run is audited after its evaluation: recovery per probe variant, the
    # target and retain model probed once (the later audits reuse them) and identical for all.
    robust = saved["robustness"]
    assert list(robust) == ["uld", "ga", "gd", "npo"]
    keys = {"plain", "paraphrase/paraphrased_question", "paraphrase/few_shot", "sampling/leak@2", "quantize/rtn4-channel",
            "quantize/rtn4-g128", "relearn/forget_part", "relearn/retain_only"}
    assert set(robust["uld"]["variants"]) == keys | {"components/target_alone", "components/assistant_alone"}
    assert set(robust["ga"]["variants"]) == keys | {"components/target_alone"}
    assert "unavailable" in robust["ga"]["variants"]["components/target_alone"]
    for m, r in robust.items():
        for key, v in r["variants"].items():
            if "unavailable" not in v:
                assert all(isinstance(x, float) for x in v["recovery"].values()), (m, key)
                assert 0 <= v["unlearned"]["prob"] <= 1 and 0 <= v["unlearned"]["rouge"] <= 1
        assert (r["reused"] == 0) == (m == "uld")
        assert r["variants"]["quantize/rtn4-g128"]["target"] == robust["uld"]["variants"]["quantize/rtn4-g128"]["target"]
        assert json.loads((out / "audit" / m / "AUDIT.json").read_text())["models"]["target"]["path"] == str(cache / "target")
    # the component "target alone" of ULD is the target: recovery 1
    assert robust["uld"]["variants"]["components/target_alone"]["recovery"]["prob"] == pytest.approx(1.0, abs=1e-6)
    report = (out / "REPORT.md").read_text()
    assert "## Robustness" in report and "| relearn/forget_part |" in report
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Seeds are plumbed through end to end with one cheap method; the averaging itself is
    # checked by hand below, so the four methods need not run twice more.
    out2 = tmp_path / "out2"
    settings = _settings()
    settings["methods"] = ("ga",)
    results2 = run_demo(out2, cache, seeds=2, settings=settings, audit=False)
    assert set(results2) == {"target", "retain", "ga"}
    again = json.loads((out2 / "results.json").read_text())
    rows = again["per_seed"]["ga"]
    assert len(rows) == 2 and again["results"]["ga"]["seeds"] == 2
    assert again["results"]["ga"]["model_utility"] == pytest.approx((rows[0]["model_utility"] + rows[1]["model_utility"]) / 2)
    assert again["spread"]["ga"]["model_utility"]["min"] == min(r["model_utility"] for r in rows)
    report = (out2 / "REPORT.md").read_text()
    assert "## Per seed" in report and "## Spread over 2 seeds" in report
    assert again["robustness"] is None and "## Robustness" not in report and not (out2 / "robustness.png").exists()
    # The audit of the methods before it did not change GA's unlearning (seed 0, same recipe).
    strip = lambda r: {k: v for k, v in r.items() if k != "train_seconds"}  # noqa: E731
    assert strip(rows[0]) == strip(saved["per_seed"]["ga"][0])
    assert all(again["pipeline_reused"].values())  # every stage reused
    assert all(v == 0 for v in again["pipeline_seconds"].values())
    # The target and retain model are the cached ones, so their scores are identical.
    assert again["results"]["target"] == saved["results"]["target"]
    assert again["results"]["retain"] == saved["results"]["retain"]


def test_average_and_spread_over_seeds_by_hand():
    rows = [{"fq": 0.1, "mu": 0.8, "t": None}, {"fq": 0.3, "mu": 0.6, "t": 2.0}, {"fq": 0.2, "mu": 0.7, "t": 4.0}]
    mean = average(rows)
    assert mean["fq"] == pytest.approx(0.2) and mean["mu"] == pytest.approx(0.7) and mean["t"] is None
    assert mean["seeds"] == 3
    sd = spread(rows)
    # sample sd of (0.1, 0.3, 0.2): sqrt(((-0.1)^2 + 0.1^2 + 0) / 2) = 0.1
    assert sd["fq"]["sd"] == pytest.approx(0.1) and (sd["fq"]["min"], sd["fq"]["max"]) == (0.1, 0.3)
    assert sd["t"] is None and spread(rows[:1])["fq"] is None
