"""`uld study tofu` end to end on a tiny model and the real TOFU files, in seconds."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def tiny_model_dir(tmp_path):
    from uld.testing import tiny_llama, tiny_tokenizer

    d = tmp_path / "tiny"
    tiny_llama(num_layers=4).save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


def _tiny_cfg():
    from uld.studies.tofu import StudyConfig

    return StudyConfig(retain_authors=1, forget_authors=1, qa_per_author=2, general_items=2, finetune_epochs=1,
                       finetune_lr=1e-3, finetune_batch=2, max_length=96, eval_max_new_tokens=3, eval_batch=4)


def test_study_data_splits_follow_tofu_authors(tofu_dir, tmp_path):
    """Author i owns rows 20i..20i+19 of full; retain = first authors, forget = last ones."""
    from uld.data.records import load_split
    from uld.studies.tofu import FORGET_SPLIT, StudyConfig, prepare_data

    cfg = StudyConfig(retain_authors=2, forget_authors=1, qa_per_author=3, general_items=5)
    sizes = prepare_data(str(tofu_dir), cfg, tmp_path)
    full = load_split(str(tofu_dir), "full")
    forget = load_split(str(tmp_path), FORGET_SPLIT)
    retain = load_split(str(tmp_path), "retain")
    assert [r["question"] for r in retain] == [full[i]["question"] for i in (0, 1, 2, 20, 21, 22)]
    assert [r["question"] for r in forget] == [full[i]["question"] for i in (3980, 3981, 3982)]
    assert sizes == {"train": 9, "retain": 6, FORGET_SPLIT: 3, f"{FORGET_SPLIT}_perturbed": 3, "retain_perturbed": 6,
                     "holdout_study": 3, "real_authors_perturbed": 5, "world_facts_perturbed": 5}
    pert = load_split(str(tmp_path), f"{FORGET_SPLIT}_perturbed")
    assert [r["question"] for r in pert] == [r["question"] for r in forget] and len(pert[0]["perturbed_answer"]) == 5
    aug = [json.loads(x) for x in (tmp_path / "augment.jsonl").read_text().splitlines()]
    retain_answers = {r["answer"] for r in retain}
    assert all(len(a["distractors"]) == 2 and set(a["distractors"]) <= retain_answers for a in aug)


def test_study_runs_end_to_end_and_resumes_from_its_cache(tofu_dir, tiny_model_dir, tmp_path):
    from uld.studies.tofu import Variant, run_study

    variants = [Variant("uld", "uld", lr=1e-3, epochs=1, batch_size=2, overrides={"policy.lora_rank": 0, "policy.num_layers": 1},
                        alphas=[0.5, 1.0]),
                Variant("ga", "ga", lr=1e-5, epochs=1, batch_size=2)]
    out, cache, logs = tmp_path / "out", tmp_path / "cache", []
    result = run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), variants, log=logs.append)
    rows = result["results"]
    assert list(rows) == ["target", "retain", "uld a=0.5", "uld a=1.0", "ga"]
    assert rows["retain"]["forget_quality"] == pytest.approx(1.0)  # the reference against itself
    for r in rows.values():
        assert 0 <= r["model_utility"] <= 1 and 0 <= r["forget_quality"] <= 1
    assert rows["uld a=0.5"]["train_forget_prob"] is not None
    assert (out / "REPORT.md").read_text().startswith("# uld study tofu: tiny")
    assert (out / "fq_vs_utility.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["split_sizes"]["forget_study"] == 2
    # a second run reuses every stage and gives the same table
    logs.clear()
    again = run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), variants, log=logs.append)
    assert not any("building" in line for line in logs)
    assert all(v == 0.0 for v in again["stage_seconds"].values())
    assert again["results"]["ga"]["model_utility"] == rows["ga"]["model_utility"]
    # a recipe changed under the same name trains anew (its stage is keyed on the recipe)
    logs.clear()
    changed = [Variant("ga", "ga", lr=2e-5, epochs=1, batch_size=2)]
    run_study(str(tiny_model_dir), str(tofu_dir), out, cache, _tiny_cfg(), changed, log=logs.append)
    assert [line for line in logs if "building" in line and "runs" in line][0].startswith("study: ga seed 0: building")
    assert variants[1].recipe_key() != changed[0].recipe_key()
    assert len(list((cache / "runs").glob("ga-*-s0"))) == 2


def test_study_refuses_a_cache_built_with_other_settings(tofu_dir, tiny_model_dir, tmp_path):
    from dataclasses import replace

    from uld.errors import UldError
    from uld.studies.tofu import run_study

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "study.json").write_text(json.dumps({"model": "other"}))
    with pytest.raises(UldError, match="another model, data or size"):
        run_study(str(tiny_model_dir), str(tofu_dir), tmp_path / "o", cache, replace(_tiny_cfg()), [])


def test_study_cli_rejects_unknown_methods(capsys, tofu_dir):
    from uld.cli import main

    assert main(["study", "tofu", "--model", "x", "--data", str(tofu_dir), "--methods", "uld,npo3"]) == 2
    assert "unknown variant(s) npo3 in --methods" in capsys.readouterr().err
