"""Reference logs in both public formats, result-file round trips, and `uld aggregate`."""

import json

import numpy as np
import pytest

from uld.cli import main
from uld.errors import UldError
from uld.eval.reference import read_log
from uld.eval.results import read_results, write_results
from uld.eval.tofu import NO_REFERENCE, SplitScores, compute_metrics, summarize


def _log(tofu_logs, name):
    return tofu_logs / name / "eval_log_aggregated.json"


def test_aggregate_reproduces_tofu_figures(tofu_logs, capsys):
    """Published figures of the original TOFU logs: MU(phi_full) = 0.522074,
    FQ(phi_full vs phi_retain90) = 2.19427e-16 (6 significant figures)."""
    rc = main(["aggregate", str(_log(tofu_logs, "phi_full")), "--reference", str(tofu_logs / "phi_retain90"), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert f"{summary['model_utility']:.6g}" == "0.522074"
    assert f"{summary['forget_quality']:.6g}" == "2.19427e-16"
    retain = summarize(compute_metrics(read_log(tofu_logs / "phi_retain90").splits))
    assert f"{retain['model_utility']:.6g}" == "0.531991"


def test_aggregate_without_reference_says_why_forget_quality_is_missing(tofu_logs, capsys):
    assert main(["aggregate", str(tofu_logs / "phi_full"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["forget_quality"] is None
    assert summary["unavailable"]["forget_quality"] == NO_REFERENCE


def _openunlearning_style(tofu_log):
    """What OpenUnlearning writes for a retain model: per item score = p(wrong)/(p(para)+1e-10)."""
    d = json.loads(tofu_log.read_text())["eval_log_forget.json"]
    para = np.array([d["avg_paraphrased_loss"][k] for k in sorted(d["avg_paraphrased_loss"], key=int)])
    pert = np.array([d["average_perturb_loss"][k] for k in sorted(d["average_perturb_loss"], key=int)]).mean(-1)
    tr = np.exp(-pert) / (np.exp(-para) + 1e-10)
    return {
        "forget_truth_ratio": {"agg_value": 0.0, "value_by_index": {str(i): {"score": float(v)} for i, v in enumerate(tr)}},
        "mia_min_k": {"agg_value": 0.5},
    }


def test_reference_in_either_format_gives_the_same_forget_quality(tofu_logs, tmp_path):
    full = read_log(_log(tofu_logs, "phi_full"))
    tofu_ref = read_log(_log(tofu_logs, "phi_retain90"))
    ou_path = tmp_path / "TOFU_EVAL.json"
    ou_path.write_text(json.dumps(_openunlearning_style(_log(tofu_logs, "phi_retain90"))))
    ou_ref = read_log(tmp_path)
    assert ou_ref.format == "openunlearning" and tofu_ref.format == "tofu"
    fq_tofu = compute_metrics(full.splits, reference=tofu_ref)["forget_quality"]["agg_value"]
    fq_ou = compute_metrics(full.splits, reference=ou_ref)["forget_quality"]["agg_value"]
    assert fq_ou == fq_tofu == pytest.approx(2.19427e-16, rel=1e-5)
    # a uld result file (our own TOFU_EVAL.json) as the reference gives it too
    write_results(tmp_path / "uld_retain", compute_metrics(tofu_ref.splits))
    fq_uld = compute_metrics(full.splits, reference=read_log(tmp_path / "uld_retain"))["forget_quality"]["agg_value"]
    assert fq_uld == fq_tofu


def test_result_files_round_trip(tofu_logs, tmp_path):
    """Write TOFU_EVAL.json + TOFU_SUMMARY.json, read them back as a log: same numbers."""
    full, ref = read_log(tofu_logs / "phi_full"), read_log(tofu_logs / "phi_retain90")
    metrics = compute_metrics(full.splits, reference=ref)
    summary = write_results(tmp_path, metrics)
    metrics2, summary2 = read_results(tmp_path)
    assert summary2 == json.loads(json.dumps(summary))
    assert metrics2["forget_Q_A_ROUGE"]["value_by_index"]["0"]["generation"] == full.splits["forget"].generations[0]
    again = read_log(tmp_path)
    resummary = summarize(compute_metrics(again.splits, reference=ref))
    for key, value in summary.items():
        if isinstance(value, float):
            assert resummary[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert np.allclose(again.splits["forget"].nll_pert, full.splits["forget"].nll_pert)


def _tiny_splits(n, answers):
    rng = np.random.default_rng(n)
    s = {k: SplitScores(nll=rng.random(n), nll_para=rng.random(n), nll_pert=rng.random((n, 3)) + 1, rouge=rng.random(n), answers=answers) for k in ("forget", "retain")}
    return s


def test_reference_with_other_item_count_or_split_is_one_sentence(tmp_path):
    write_results(tmp_path / "ref", compute_metrics(_tiny_splits(4, ["a1", "a2", "a3", "a4"])))
    ref = read_log(tmp_path / "ref")
    with pytest.raises(UldError, match="has 4 forget items but this evaluation has 3"):
        compute_metrics(_tiny_splits(3, ["a1", "a2", "a3"]), reference=ref)
    with pytest.raises(UldError, match="different forget items"):
        compute_metrics(_tiny_splits(4, ["b1", "b2", "b3", "b4"]), reference=ref)
    fq = compute_metrics(_tiny_splits(4, ["a1", "a2", "a3", "a4 "]), reference=ref)["forget_quality"]
    assert fq["agg_value"] == pytest.approx(1.0)  # same seed: identical R samples


def test_unreadable_logs_are_one_sentence(tmp_path):
    with pytest.raises(UldError, match="does not exist"):
        read_log(tmp_path / "nope.json")
    with pytest.raises(UldError, match="holds no evaluation log"):
        read_log(tmp_path)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(UldError, match="not valid JSON"):
        read_log(tmp_path / "x.json")
    (tmp_path / "y.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(UldError, match="neither a TOFU"):
        read_log(tmp_path / "y.json")
    assert main(["aggregate", str(tmp_path / "y.json")]) == 2
