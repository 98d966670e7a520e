"""`uld eval` end to end on a tiny model with the TOFU mirror, and its bad-input cases."""

import json
import shutil

import pytest

from uld.cli import main

FAST = ["--max-items", "4", "--max-new-tokens", "4", "--batch-size", "4"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from uld.testing import tiny_llama, tiny_tokenizer

    d = tmp_path_factory.mktemp("tiny_model")
    tiny_llama().save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def first_run(tiny_model_dir, tmp_path_factory):
    from conftest import TOFU_DIR

    if not TOFU_DIR.is_dir():
        pytest.skip(f"TOFU mirror not found at {TOFU_DIR} (shared data absent)")
    out = tmp_path_factory.mktemp("run") / "eval"
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(TOFU_DIR), "--forget", "forget01", "--out", str(out), *FAST])
    return rc, out


def test_eval_writes_both_files_and_says_why_forget_quality_is_missing(first_run):
    rc, out = first_run
    assert rc == 0
    metrics = json.loads((out / "TOFU_EVAL.json").read_text())
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    for name in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "mia_min_k_plus_plus"):
        assert isinstance(summary[name], float), name
    assert len(metrics["forget_Q_A_PERT_Prob"]["value_by_index"]) == 4
    assert len(metrics["forget_Q_A_PERT_Prob"]["value_by_index"]["0"]["avg_loss"]) == 5
    assert "generation" in metrics["retain_Q_A_ROUGE"]["value_by_index"]["3"]
    # the summary holds numbers only (as OpenUnlearning's); the reasons lie beside it
    assert all(isinstance(v, float) for v in summary.values())
    reasons = json.loads((out / "TOFU_UNAVAILABLE.json").read_text())
    assert "forget_quality" not in summary and "--reference" in reasons["forget_quality"]
    assert metrics["forget_quality"]["unavailable"] == reasons["forget_quality"]
    assert 0.0 <= summary["model_utility"] <= 1.0


def test_eval_run_is_usable_as_reference_of_another(first_run, tiny_model_dir, tofu_dir, tmp_path, capsys):
    _, ref = first_run
    out = tmp_path / "second"
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(tofu_dir), "--forget", "forget01", "--out", str(out), "--reference", str(ref), *FAST])
    assert rc == 0
    summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
    # the same model against itself: identical R samples, KS p-value 1, no privacy leak
    assert summary["forget_quality"] == pytest.approx(1.0)
    assert summary["privleak"] == pytest.approx(0.0)
    assert "forget quality" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_split", "split 'retain_perturbed' not found"),
        ("other_count", "has 4 forget items but this evaluation has 3"),
        ("other_split", "different forget items"),
        ("bad_model", "holds no model"),
    ],
)
def test_eval_bad_input_is_one_sentence_and_writes_nothing(case, expected, first_run, tiny_model_dir, tofu_dir, tmp_path, capsys):
    _, ref = first_run
    data, model, forget, extra = str(tofu_dir), str(tiny_model_dir), "forget01", [*FAST]
    if case == "missing_split":
        data = str(tmp_path / "partial")
        (tmp_path / "partial").mkdir()
        shutil.copy(tofu_dir / "forget01_perturbed.json", tmp_path / "partial")
    elif case == "other_count":
        extra = ["--max-items", "3", "--max-new-tokens", "4", "--reference", str(ref)]
    elif case == "other_split":
        forget, extra = "forget05", [*FAST, "--reference", str(ref)]
    else:
        model = str(tmp_path / "empty_model")
        (tmp_path / "empty_model").mkdir()
    out = tmp_path / "out"
    rc = main(["eval", "--model", model, "--data", data, "--forget", forget, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()
