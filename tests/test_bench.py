"""`uld bench`: a tiny smoke run of each sub-benchmark (structure and sanity, not speed)."""

from __future__ import annotations

import json

import pytest

import uld.bench.perf as perf
from uld.cli import main

TINY = dict(hidden=32, layers=4, vocab=400, num_authors=20, new_tokens=6, gen_batches=(1, 4),
            eval_items=2, eval_new_tokens=3, eval_batch=4, train_batch=16)


@pytest.fixture
def tiny_bench(monkeypatch):
    """Tiny sizes, and every case run in this process (a fresh process per case is the real
    run's way of measuring peak memory; it costs seconds of imports per case)."""
    real = perf.BenchSizes
    monkeypatch.setattr(perf, "BenchSizes", lambda **kw: real(**{**TINY, **kw}))
    monkeypatch.setattr(perf, "_run_case", perf.worker)


def test_bench_all_writes_json_and_table_with_positive_ratios(tiny_bench, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "all", "--out", str(out), "--repeats", "1"]) == 0
    res = json.loads((out / "bench.json").read_text())
    assert {"machine", "train", "generate", "eval", "wall_seconds"} <= set(res)
    assert {"cpu_count", "torch", "torch_threads", "device", "memory_method"} <= set(res["machine"])
    t = res["train"]
    for m in ("uld", "npo_gd", "gd"):
        assert t[m]["epoch_seconds"] > 0 and len(t[m]["all_seconds"]) == 1
    assert t["speedup_vs_npo_gd"] > 0 and t["speedup_vs_gd"] > 0
    for b in ("batch1", "batch4"):
        row = res["generate"][b]
        assert row["target"]["tokens_per_s"] > 0 and row["throughput_ratio"] > 0
        # The assistant shares the target's weights: ULD holds the target's storages plus LoRA only.
        # K = 1 block of hidden h = 32, intermediate i = 85, LoRA r = 32 on its 7 linear layers:
        # r(h+h) for q, k, v, o and r(h+i) for gate, up, down, in fp32 bytes.
        h, i, r = 32, 32 * 8 // 3, 32
        lora_bytes = 4 * (4 * r * (h + h) + 3 * r * (h + i))
        assert row["uld"]["weights_mb"] - row["target"]["weights_mb"] == pytest.approx(lora_bytes / 2**20)
        assert row["assistant_kv_mb"] > 0 and row["memory_ratio"] > 0
        # Live tensor bytes: ULD holds the target's KV and the assistant's on top of the same weights.
        assert row["uld"]["live_mb"] > row["target"]["live_mb"] > row["target"]["weights_mb"]
        assert row["live_memory_ratio"] > 0
    e = res["eval"]
    assert e["items"] == 4 * 2 and e["speedup"] > 0
    assert e["max_abs_diff"] < 1e-4  # batched scoring and generation give batch-1's values
    assert set(e["groups"]) == {"probability", "generation", "memorization", "mia", "gradient"}
    assert all(row["items"] > 0 and row["items_per_s"] > 0 for row in e["groups"].values())
    skipped = e["openunlearning"]["skipped"]
    assert skipped.startswith("OpenUnlearning comparison skipped: pass --openunlearning DIR")
    md = (out / "bench.md").read_text()
    assert "## train" in md and "## generate" in md and "## eval" in md and skipped in md
    captured = capsys.readouterr()
    assert "ULD" in captured.out and "OpenUnlearning comparison skipped" in captured.err


def test_openunlearning_comparison_skip_reasons_and_ratios(tmp_path):
    from uld.bench import openunlearning as OU

    assert "pass --openunlearning DIR" in OU.skip_reason(None)
    assert "is not OpenUnlearning's src directory" in OU.skip_reason(str(tmp_path))
    # per group the median CPU seconds (first of each [cpu, wall] pair); overall = sums
    raw = {"probability": {"metrics": ["forget_Q_A_Prob"], "items": 30,
                           "openunlearning": [[3.0, 9.0], [2.0, 9.0], [4.0, 9.0]], "uld": [[1.0, 5.0], [0.5, 5.0], [2.0, 5.0]]},
           "gradient": {"metrics": ["mia_gradnorm"], "items": 8, "openunlearning": [[2.0, 2.0]], "uld": [[1.6, 2.0]]},
           "together": {"metrics": ["forget_Q_A_Prob", "mia_gradnorm"], "uld": [[2.0, 3.0], [2.5, 3.0]]}}
    s = OU.summarize(raw)
    p = s["groups"]["probability"]
    assert (p["openunlearning_cpu_s"], p["uld_cpu_s"], p["ratio"]) == (3.0, 1.0, 3.0)
    assert p["uld_items_per_s"] == 30.0 and p["openunlearning_items_per_s"] == 10.0
    assert s["groups"]["gradient"]["ratio"] == pytest.approx(1.25)
    assert (s["openunlearning_cpu_s"], s["uld_cpu_s"]) == (5.0, 2.6) and s["ratio"] == pytest.approx(5 / 2.6)
    md = "\n".join(OU.markdown(s))
    assert s["together"]["uld_cpu_s"] == 2.25 and s["together"]["ratio"] == pytest.approx(5 / 2.25)
    assert "| probability | 30 | 3.000 | 1.000 | 10.0 | 30.0 | 3.00x |" in md
    assert "| all groups, each alone | | 5.000 | 2.600 | | | 1.92x |" in md
    assert "| all groups in one evaluation | | 5.000 | 2.250 | | | 2.22x |" in md


def test_bench_rejects_unknown_benchmark_and_all_without_out(tmp_path, capsys):
    assert main(["bench", "speed"]) == 2
    assert "unknown benchmark 'speed'" in capsys.readouterr().err
    assert main(["bench", "all"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["bench", "train", "--repeats", "0", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    for bad, says in (("hidden", "KEY=VALUE"), ("depth=3", "KEY=VALUE"), ("train_items=-1", "a positive integer (0 = all)"),
                      ("gen_batches=1,0", "positive integers"), ("layers=two", "a positive integer")):
        assert main(["bench", "train", "--size", bad, "--out", str(tmp_path / "x")]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bench_sizes_and_a_trimmed_train_epoch(tofu_dir, tmp_path):
    from uld.bench.workload import parse_sizes, train_data
    from uld.data.records import load_split

    sizes = parse_sizes(["train_items=5", "gen_batches=1,16", "new_tokens=8"])
    assert (sizes.train_items, sizes.gen_batches, sizes.new_tokens, sizes.hidden) == (5, (1, 16), 8, 384)
    trimmed = train_data(str(tofu_dir), tmp_path, 5)
    for split in ("forget10", "retain90"):
        assert load_split(trimmed, split) == load_split(str(tofu_dir), split)[:5]
    assert train_data(str(tofu_dir), tmp_path, 0) == str(tofu_dir)


def test_memory_cases_run_with_a_fixed_mmap_threshold_and_timed_cases_without(monkeypatch):
    """glibc raises its mmap threshold after large frees and keeps the heap's free space, so the
    resident set of the same tensors varies by run; the memory-only processes fix the threshold."""
    import subprocess

    from uld.bench.measure import MALLOC_ENV

    seen = []

    def fake_run(cmd, capture_output, text, env):
        seen.append(env)
        return subprocess.CompletedProcess(cmd, 0, stdout="@@{}\n", stderr="")

    monkeypatch.setattr(perf.subprocess, "run", fake_run)
    for which in ("target", "uld", "both"):
        assert perf._run_case({"kind": "generate", "which": which}) == {}
    assert seen[0]["MALLOC_MMAP_THRESHOLD_"] == seen[1]["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert seen[2] is None  # the timed process runs as the user's
