"""Performance benchmarks: ULD against the alternatives, as ratios measured in one run.

Three sub-benchmarks, each the median of `repeats` runs:

- train:    one epoch, same target and data (forget + retain): ULD (K = a quarter of the
            layers, LoRA) vs NPO+GD vs GD (full model); seconds per epoch (the loop's own
            `train_seconds`). NPO is the retain-regularised NPO+GD (the paper's best baseline,
            the field's usual "NPO"): forget-only NPO would see half the data per step.
- generate: greedy decoding, target alone vs ULD (target - alpha * assistant), batch 1 and
            16, `new_tokens` tokens per sequence (min_new_tokens, so EOS does not cut). The two
            are timed alternately in one process (a drift of the machine's speed hits both);
            memory is measured in a fresh process per model.
- eval:     TOFU evaluation (scoring + generation, `score_model`) items/s at batch 16 vs 1,
            with the largest absolute difference between the two runs' per-item values.

Peak memory: on CPU the growth of the process's resident set over a window (the kernel's
peak-RSS counter is reset at the window's start where Linux allows, else `ru_maxrss`), on CUDA
`torch.cuda.max_memory_allocated`; tracemalloc does not see torch's allocator. For `generate`
the window starts after loading and a warm-up call, and the model's weights are added as the
bytes of its distinct tensor storages (the assistant's shared weights are counted once); its memory
processes fix glibc's mmap threshold, and a second call gives the live tensor bytes (measure.py).
By default the model is a randomly initialised Llama built from a config (speed does not
depend on what the weights know, except the plausible set's size: a random model's is large, so
ULD's head runs on the whole vocabulary) over a BPE tokenizer trained on the built-in world's text.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from uld.bench import measure as M
from uld.bench.eval_groups import eval_groups
from uld.bench.workload import BenchSizes, prepare_miniature, train_data
from uld.errors import UldError

BENCHES = ("train", "generate", "eval")
TRAIN_METHODS = ("uld", "npo_gd", "gd")
"""Methods of `train`, ULD first; each sees the same forget and retain batches."""


# ------------------------------------------------------------------ one case, in a subprocess



def _case_train(model: str, data: str, method: str, repeats: int, sizes: BenchSizes, work: str) -> dict:
    from uld.train.config import make_config
    from uld.train.run import unlearn

    times, peak = [], 0.0
    for r in range(repeats):
        cfg = make_config(model=model, method=method, data__source=data, data__forget="forget10",
                          data__retain="retain90", augment__source="none",  # same data for every method
                          train__epochs=1, train__batch_size=sizes.train_batch, train__mixed_precision="no")
        start = M.peak_start()
        out = Path(work) / f"train-{method}-{r}"
        unlearn(cfg, out)
        peak = max(peak, M.peak_delta(start))
        times.append(json.loads((out / "run.json").read_text())["train_seconds"])
    return {"seconds": times, "peak_mb": peak}


def _load(model: str, device: str):
    from uld.models.loading import load_model

    lm, tok = load_model(model, device=device)
    return lm.eval(), tok


def _uld(target, device: str):
    from uld.models.assistant import build_assistant
    from uld.models.uld import ULDForCausalLM

    return ULDForCausalLM(target, build_assistant(target).to(device)).eval()


def _case_generate(model: str, data: str, which: str, batch: int, repeats: int, sizes: BenchSizes) -> dict:
    """`which` "both": the target and ULD timed alternately (`repeats` pairs, so a drift of the
    machine's speed hits both alike). "target" / "uld": one model's memory while decoding."""
    import torch

    from uld.data.collate import left_pad
    from uld.data.prompts import PromptFormat
    from uld.data.records import load_split

    device = M.device_name()
    target, tok = _load(model, device)
    models = {}
    if which in ("target", "both"):
        models["target"] = target
    if which in ("uld", "both"):
        models["uld"] = _uld(target, device)
    questions = [r["question"] for r in load_split(data, "forget10")][:batch]
    while len(questions) < batch:
        questions += questions[: batch - len(questions)]
    fmt = PromptFormat()
    prompts = [fmt.prompt_ids(tok, q) for q in questions]
    ids, mask = left_pad(prompts, tok.pad_token_id)
    width = ids.shape[1]
    ids, mask = ids.to(device), mask.to(device)
    n = sizes.new_tokens
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id)
    result: dict[str, Any] = {}
    with torch.no_grad():
        for lm in models.values():  # warm-up
            lm.generate(input_ids=ids, attention_mask=mask, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
        # After loading and warm-up: the peak is what decoding adds (KV caches, logits).
        start = M.peak_start()
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(repeats if which == "both" else 1):
            for name, lm in models.items():
                M.sync()
                t0 = time.perf_counter()
                out = lm.generate(input_ids=ids, attention_mask=mask, **kw)
                M.sync()
                times[name].append(time.perf_counter() - t0)
        result["peak_mb"] = M.peak_delta(start)
        if which != "both":  # the same call again, its tensors counted by torch's allocator
            with M.LiveCounter() as live:
                models[which].generate(input_ids=ids, attention_mask=mask, stopping_criteria=[live.each_step()], **kw)
            result["live_peak_mb"] = live.result.peak_mb
    result["seconds"] = times
    result["tokens"] = int(out.shape[1] - width) * batch
    result["weights_mb"] = {name: M.weights_mb(lm) for name, lm in models.items()}
    if "uld" in models:
        result["assistant_kv_mb"] = M.assistant_kv_mb(models["uld"], batch, int(out.shape[1]))
    return result



def _case_eval(model: str, data: str, repeats: int, sizes: BenchSizes) -> dict:
    import numpy as np

    from uld.eval.scoring import CausalLMScorer
    from uld.eval.tofu import load_tofu_data, score_model

    device = M.device_name()
    target, tok = _load(model, device)
    tofu = load_tofu_data(data, "forget10", max_items=sizes.eval_items, mia=False)
    items = sum(len(v) for v in tofu.records.values())
    result: dict[str, Any] = {"items": items}
    values = {}
    for bs in (1, sizes.eval_batch):
        scorer = CausalLMScorer(target, tok, batch_size=bs, device=device)
        times = []
        for _ in range(repeats):
            M.sync()
            t0 = time.perf_counter()
            splits, _ = score_model(scorer, tofu, max_new_tokens=sizes.eval_new_tokens, mia=False)
            M.sync()
            times.append(time.perf_counter() - t0)
        values[bs] = np.concatenate(
            [np.concatenate([s.nll, s.nll_pert.ravel(), np.asarray(s.rouge, dtype=float)]) for s in splits.values()]
        )
        result[f"batch{bs}"] = {"seconds": times}
    result["max_abs_diff"] = float(np.max(np.abs(values[1] - values[sizes.eval_batch])))
    result["groups"] = eval_groups(target, tok, data, repeats, sizes.eval_items, sizes.eval_batch, sizes.eval_new_tokens, device)
    return result



def worker(spec: dict) -> dict:
    """Run one case described by `spec` (called in a fresh process by `_run_case`)."""
    import torch

    torch.manual_seed(0)
    sizes = BenchSizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["sizes"].items()})
    kind = spec["kind"]
    if kind == "train":
        return _case_train(spec["model"], spec["data"], spec["method"], spec["repeats"], sizes, spec["work"])
    if kind == "generate":
        return _case_generate(spec["model"], spec["data"], spec["which"], spec["batch"], spec["repeats"], sizes)
    if kind == "eval_openunlearning":
        from uld.bench.openunlearning import compare

        return compare(spec["model"], spec["data"], spec["src"], spec["repeats"], sizes.eval_items, sizes.eval_batch,
                       sizes.eval_new_tokens)
    return _case_eval(spec["model"], spec["data"], spec["repeats"], sizes)


def _run_case(spec: dict) -> dict:
    code = "import json,sys; from uld.bench.perf import worker; print('@@' + json.dumps(worker(json.loads(sys.argv[1]))))"
    env = M.memory_env() if spec.get("which") in ("target", "uld") else None  # memory-only processes
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise UldError(f"benchmark case {spec['kind']} failed: {tail[0]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


# ------------------------------------------------------------------ the sub-benchmarks


def _med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def bench_train(model: str, data: str, repeats: int, sizes: BenchSizes, work: Path, step=None) -> dict:
    rows = {}
    for method in TRAIN_METHODS:
        r = _run_case({"kind": "train", "model": model, "data": data, "method": method, "repeats": repeats,
                       "sizes": asdict(sizes), "work": str(work)})
        rows[method] = {"epoch_seconds": _med(r["seconds"]), "all_seconds": r["seconds"], "peak_mb": r["peak_mb"]}
        if step:
            step()
    for m in TRAIN_METHODS[1:]:
        rows[f"speedup_vs_{m}"] = rows[m]["epoch_seconds"] / rows["uld"]["epoch_seconds"]
        rows[f"memory_ratio_vs_{m}"] = rows["uld"]["peak_mb"] / max(rows[m]["peak_mb"], 1e-9)
    return rows


def bench_generate(model: str, data: str, repeats: int, sizes: BenchSizes, step=None) -> dict:
    """Per batch size: one process times the target and ULD alternately; one fresh process per
    model measures its memory while decoding."""
    rows: dict[str, Any] = {"new_tokens": sizes.new_tokens}
    for batch in sizes.gen_batches:
        spec = {"kind": "generate", "model": model, "data": data, "batch": batch, "repeats": repeats,
                "sizes": asdict(sizes)}
        timed = _run_case({**spec, "which": "both"})
        if step:
            step()
        row: dict[str, Any] = {}
        for which in ("target", "uld"):
            mem = _run_case({**spec, "which": which})
            sec = _med(timed["seconds"][which])
            weights = mem["weights_mb"][which]
            row[which] = {"seconds": sec, "all_seconds": timed["seconds"][which],
                          "tokens_per_s": timed["tokens"] / sec, "peak_mb": mem["peak_mb"],
                          "weights_mb": weights, "total_mb": weights + mem["peak_mb"],
                          "live_mb": weights + mem["live_peak_mb"]}
            if step:
                step()
        row["throughput_ratio"] = row["uld"]["tokens_per_s"] / row["target"]["tokens_per_s"]
        # The memory goal: ULD <= 1.1 x the target alone + the assistant's KV cache (its weights are the target's).
        kv = timed["assistant_kv_mb"]
        row["assistant_kv_mb"] = kv
        row["memory_bound_mb"] = 1.1 * row["target"]["total_mb"] + kv
        row["memory_ratio"] = row["uld"]["total_mb"] / (row["target"]["total_mb"] + kv)
        row["live_memory_ratio"] = row["uld"]["live_mb"] / (row["target"]["live_mb"] + kv)
        rows[f"batch{batch}"] = row
    return rows


def bench_eval(model: str, data: str, repeats: int, sizes: BenchSizes, step=None, openunlearning: str | None = None) -> dict:
    from uld.bench import openunlearning as OU

    r = _run_case({"kind": "eval", "model": model, "data": data, "repeats": repeats, "sizes": asdict(sizes)})
    items = r["items"]
    out: dict[str, Any] = {"items": items, "max_new_tokens": sizes.eval_new_tokens}
    for key in ("batch1", f"batch{sizes.eval_batch}"):
        sec = _med(r[key]["seconds"])
        out[key] = {"seconds": sec, "all_seconds": r[key]["seconds"], "items_per_s": items / sec}
    out["batch_size"] = sizes.eval_batch
    out["speedup"] = out[f"batch{sizes.eval_batch}"]["items_per_s"] / out["batch1"]["items_per_s"]
    out["max_abs_diff"] = r["max_abs_diff"]
    out["groups"] = {}
    for g, row in r.get("groups", {}).items():
        sec = _med(row["seconds"])
        out["groups"][g] = {"items": row["items"], "seconds": sec, "items_per_s": row["items"] / sec if sec > 0 else None,
                            "metrics": row["metrics"]}
    reason = OU.skip_reason(openunlearning)
    out["openunlearning"] = {"skipped": reason} if reason else OU.summarize(_run_case(
        {"kind": "eval_openunlearning", "model": model, "data": data, "src": openunlearning, "repeats": repeats,
         "sizes": asdict(sizes)}))
    if step:
        step()
    return out


def run_benches(which: list[str], model: str | None, data: str | None, repeats: int, work: Path,
                sizes: BenchSizes | None = None, step=None, openunlearning: str | None = None) -> dict[str, Any]:
    """Run the named sub-benchmarks; the miniature is built under `work` unless model and data are given;
    `openunlearning`: OpenUnlearning's src directory, to time its evaluator beside `eval`'s."""
    sizes = sizes or BenchSizes()
    if repeats < 1:
        raise UldError(f"--repeats must be at least 1, got {repeats}")
    if (model is None) != (data is None) and "train" in which:
        raise UldError("give both --model and --data, or neither (the built-in miniature)")
    t0 = time.time()
    if model is None or data is None:
        m, d = prepare_miniature(work, sizes)
        model, data = model or m, data or d
    result: dict[str, Any] = {"machine": M.machine(), "model": model, "data": data, "repeats": repeats,
                              "sizes": asdict(sizes)}
    if "train" in which:
        result["train"] = bench_train(model, train_data(data, work, sizes.train_items), repeats, sizes, work, step)
    if "generate" in which:
        result["generate"] = bench_generate(model, data, repeats, sizes, step)
    if "eval" in which:
        result["eval"] = bench_eval(model, data, repeats, sizes, step, openunlearning)
    result["wall_seconds"] = time.time() - t0
    return result


def steps_of(which: list[str], sizes: BenchSizes) -> int:
    return 3 * ("train" in which) + 3 * len(sizes.gen_batches) * ("generate" in which) + ("eval" in which)


def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = ["# uld bench", "",
             f"Machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
             f"device {m['device']}{' ' + m['gpu'] if m.get('gpu') else ''}; load average at start {m['load_average']}.",
             f"Model: {res['model']}. Median of {res['repeats']} repeats; memory: {m['memory_method']}. Total wall {res['wall_seconds']:.0f} s.", ""]
    if "train" in res:
        t = res["train"]
        sz = res["sizes"]
        lines += [f"## train (one epoch: {sz.get('train_items') or 'all'} forget items, batch {sz['train_batch']})", "", "| method | s/epoch | peak MB |", "|---|---|---|"]
        lines += [f"| {k} | {t[k]['epoch_seconds']:.2f} | {t[k]['peak_mb']:.0f} |" for k in TRAIN_METHODS]
        lines += ["", f"ULD speed-up: {t['speedup_vs_npo_gd']:.2f}x vs NPO+GD, {t['speedup_vs_gd']:.2f}x vs GD; "
                  f"ULD peak memory / NPO+GD's: {t['memory_ratio_vs_npo_gd']:.2f}, / GD's: {t['memory_ratio_vs_gd']:.2f}.", ""]
    if "generate" in res:
        g = res["generate"]
        lines += [f"## generate ({g['new_tokens']} new tokens, greedy)", "",
                  "| batch | target tok/s | ULD tok/s | ULD/target | target MB | ULD MB | assistant KV MB | ULD / (target + KV) "
                  "| live: target MB | live: ULD MB | live: ULD / (target + KV) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, row in g.items():
            if key.startswith("batch"):
                lines.append(f"| {key[5:]} | {row['target']['tokens_per_s']:.0f} | {row['uld']['tokens_per_s']:.0f} | "
                             f"{row['throughput_ratio']:.2f} | {row['target']['total_mb']:.1f} | {row['uld']['total_mb']:.1f} | "
                             f"{row['assistant_kv_mb']:.1f} | {row['memory_ratio']:.2f} | {row['target']['live_mb']:.1f} | "
                             f"{row['uld']['live_mb']:.1f} | {row['live_memory_ratio']:.2f} |")
        lines += ["", "Memory while generating = the model's distinct weight storages (shared tensors once) + the peak "
                  "resident-set growth during decoding; live: the same weights + the peak bytes torch's allocator "
                  "held for tensors in a second decoding call (independent of the C allocator).", ""]
    if "eval" in res:
        e = res["eval"]
        b = f"batch{e['batch_size']}"
        lines += [f"## eval (TOFU, {e['items']} items, {e['max_new_tokens']} generated tokens each)", "",
                  "| batch size | items/s |", "|---|---|",
                  f"| 1 | {e['batch1']['items_per_s']:.2f} |", f"| {e['batch_size']} | {e[b]['items_per_s']:.2f} |", "",
                  f"Speed-up {e['speedup']:.2f}x; max abs difference of per-item values {e['max_abs_diff']:.2e}.", ""]
        if e.get("groups"):
            lines += [f"Per metric group (batch {e['batch_size']}; each group's requests only):", "",
                      "| group | items | seconds | items/s |", "|---|---|---|---|"]
            for g, row in e["groups"].items():
                ips = f"{row['items_per_s']:.1f}" if row["items_per_s"] else "-"
                lines.append(f"| {g} | {row['items']} | {row['seconds']:.2f} | {ips} |")
            lines += ["", "gradient: items/s counts the attacked (forget + holdout) items, one forward and "
                      "backward pass each.", ""]
        if "openunlearning" in e:
            from uld.bench.openunlearning import markdown

            lines += markdown(e["openunlearning"])
    return "\n".join(lines)
