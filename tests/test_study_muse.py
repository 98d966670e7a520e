"""The muse study end to end on a miniature of the miniature (seconds), and its input checks."""

import json

import pytest

from uld.errors import UldError
from uld.studies.muse import MuseStudyConfig, run_muse_study
from uld.world.books import BooksConfig


def _tiny() -> MuseStudyConfig:
    cfg = MuseStudyConfig(books=BooksConfig(forget_books=1, retain_books=2, holdout_books=1, chapters=2),
                          hidden=32, layers=2, intermediate=64, heads=2, vocab=400, train_epochs=1, batch_size=8,
                          verbmem_max_new_tokens=8, knowmem_max_new_tokens=4, prefix_tokens=8, chunk_tokens=24,
                          completion_tokens=8, uld_weights=(0.75,))
    cfg.recipes = {"ga": {"lr": 1e-4, "epochs": 1, "batch_size": 2},
                   "uld": {"lr": 1e-3, "epochs": 1, "batch_size": 2, "num_layers": 1, "lora_rank": 0}}
    return cfg


def test_study_writes_every_column_for_every_model(tmp_path):
    cfg = _tiny()
    results = run_muse_study(tmp_path / "out", tmp_path / "cache", seeds=1, methods=("uld", "ga"), cfg=cfg, log=lambda s: None)
    assert list(results) == ["target", "retain", "uld", "ga"]
    for name in ("target", "uld", "ga"):
        r = results[name]
        assert 0.0 <= r["forget_verbmem_ROUGE"] <= 1.0 and 0.0 <= r["mc_mean_acc"] <= 100.0
        assert r["heldout_word_perplexity"] > 1.0 and "copyright_BLEU" in r
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["seeds"] == 1 and "ga" in saved["per_seed"]
    assert "| uld |" in (tmp_path / "out" / "REPORT.md").read_text()


def test_study_refuses_an_unknown_method_before_any_work(tmp_path):
    with pytest.raises(UldError, match="unknown method 'gaa'"):
        run_muse_study(tmp_path / "out", tmp_path / "cache", methods=("gaa",))
    assert not (tmp_path / "cache").exists()


def test_study_command_names_the_studies(tmp_path):
    from uld.cli import main

    assert main(["study", "tofu", "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]) == 2
