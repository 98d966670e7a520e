"""`uld bench eval --openunlearning DIR`: OpenUnlearning's TOFU metric functions timed beside
uld's TOFU task on the same model, the same records and the same work, one metric group at a time.

OpenUnlearning (locuslab/open-unlearning) is not a package: DIR is its `src` directory. Its
metric functions are imported from there unmodified; its package `__init__` files are not run
(they import Hydra, lm-evaluation-harness and DeepSpeed, which the metric functions do not use),
so only `omegaconf` and `scikit-learn` are needed beside uld's own dependencies. uld runs with
`--protocol openunlearning` and the `qa` template, so both sides tokenise the same strings.

Work per group (forget split, `items` records; MIA: forget vs holdout):
- probability: the answer, the paraphrase and every perturbed answer scored;
- generation: ROUGE of greedy generations against the answer, the paraphrase and the perturbed
  answers (OpenUnlearning generates once per metric, uld once per question);
- memorization: extraction strength and exact memorisation;
- mia: the LOSS, zlib, Min-K% and Min-K%++ attacks (OpenUnlearning scores once per attack);
- gradient: the gradient-norm attack (batch 1 on both sides, OpenUnlearning's setting).
Times are CPU seconds of the process (`time.process_time`, one thread) and wall seconds; the
two evaluators alternate within each repeat, so a drift of the machine's speed hits both.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
import types
from pathlib import Path
from typing import Any

GROUPS: dict[str, tuple[str, ...]] = {
    "probability": ("forget_Q_A_Prob", "forget_Q_A_PARA_Prob", "forget_Q_A_PERT_Prob"),
    "generation": ("forget_Q_A_ROUGE", "forget_Q_A_PARA_ROUGE", "forget_Q_A_PERT_ROUGE"),
    "memorization": ("extraction_strength", "exact_memorization"),
    "mia": ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"),
    "gradient": ("mia_gradnorm",),
}
"""uld's metrics of each group, restricted to the forget split (what OpenUnlearning's matching
metrics compute)."""

QA_TEMPLATE = {"apply_chat_template": False, "user_start_tag": "Question: ", "user_end_tag": "\n",
               "asst_start_tag": "Answer: ", "asst_end_tag": "\n\n"}
"""OpenUnlearning's non-chat template (its Llama-2-7b-hf model config), uld's `qa` template."""

MIN_K = 0.4


def skip_reason(src: str | None) -> str | None:
    """Why the OpenUnlearning comparison cannot run (None when it can): one sentence."""
    if not src:
        return ("OpenUnlearning comparison skipped: pass --openunlearning DIR (OpenUnlearning's src directory) "
                "to time its TOFU evaluator on the same work")
    root = Path(src)
    if not (root / "evals" / "metrics" / "memorization.py").is_file() or not (root / "data" / "qa.py").is_file():
        return (f"OpenUnlearning comparison skipped: {src} is not OpenUnlearning's src directory "
                "(no evals/metrics/memorization.py and data/qa.py)")
    for module, package in (("omegaconf", "omegaconf"), ("sklearn", "scikit-learn")):
        if importlib.util.find_spec(module) is None:
            return (f"OpenUnlearning comparison skipped: its metric code needs {package}, which is not installed "
                    f"here (pip install omegaconf scikit-learn)")
    return None


def import_openunlearning(src: str) -> types.SimpleNamespace:
    """OpenUnlearning's dataset, collator, metric and attack code from its source directory,
    without running its package `__init__` files (call in a process of its own: the modules
    are registered under their own top-level names `data` and `evals`)."""
    import logging

    root = Path(src)
    sys.path.insert(0, str(root))
    for pkg in ("data", "evals", "evals.metrics", "evals.metrics.mia"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    base = types.ModuleType("evals.metrics.base")

    def unlearning_metric(name):  # the registry decorator: the plain function is all we call
        def deco(fn):
            fn.metric_name = name
            return fn
        return deco

    base.unlearning_metric = unlearning_metric
    base.logger = logging.getLogger("openunlearning")
    sys.modules["evals.metrics.base"] = base
    ns = types.SimpleNamespace()
    ns.QADataset = importlib.import_module("data.qa").QADataset
    ns.Collator = importlib.import_module("data.collators").DataCollatorForSupervisedDataset
    ns.mem = importlib.import_module("evals.metrics.memorization")
    ns.mia_auc = importlib.import_module("evals.metrics.mia.utils").mia_auc
    for name, module, cls in (("loss", "loss", "LOSSAttack"), ("zlib", "zlib", "ZLIBAttack"),
                              ("min_k", "min_k", "MinKProbAttack"), ("min_k_pp", "min_k_plus_plus", "MinKPlusPlusAttack"),
                              ("gradnorm", "gradnorm", "GradNormAttack")):
        setattr(ns, name, getattr(importlib.import_module(f"evals.metrics.mia.{module}"), cls))
    ns.OmegaConf = importlib.import_module("omegaconf").OmegaConf
    return ns


def _split_file(data: str, split: str) -> str:
    from uld.data.records import SPLIT_SUFFIXES

    for suffix in SPLIT_SUFFIXES:
        path = Path(data) / f"{split}{suffix}"
        if path.is_file():
            return str(path)
    from uld.errors import UldError

    raise UldError(f"the OpenUnlearning comparison needs the split file {split}.json in {data}")


def openunlearning_work(ou, model, tok, data: str, forget: str, items: int, batch: int, new_tokens: int) -> dict:
    """Per group, a function doing OpenUnlearning's work for that group."""
    from uld.eval.tasks.tofu import holdout_split_for

    right = ou.Collator(tok, padding_side="right", index="index")
    left = ou.Collator(tok, padding_side="left", index="index")
    files = {s: _split_file(data, s) for s in (f"{forget}_perturbed", holdout_split_for(forget))}

    def ds(split: str, key: str = "answer", gen: bool = False):
        hf = {"path": "json", "data_files": files[split], "split": f"train[:{items}]"}
        return ou.QADataset(hf_args=hf, template_args=QA_TEMPLATE, tokenizer=tok, question_key="question",
                            answer_key=key, max_length=512, predict_with_generate=gen)

    f = f"{forget}_perturbed"
    gen_args = ou.OmegaConf.create({"do_sample": False, "top_p": None, "temperature": None,
                                    "max_new_tokens": new_tokens, "use_cache": True})
    keys = ("answer", "paraphrased_answer", "perturbed_answer")

    def probability():
        for key in keys:
            ou.mem.probability(model, data=ds(f, key), collators=right, batch_size=batch)

    def generation():
        for key in keys:
            ou.mem.rouge(model, tokenizer=tok, data=ds(f, key, gen=True), collators=left, batch_size=batch,
                         generation_args=gen_args, rouge_type="rougeL_recall")

    def memorization():
        ou.mem.extraction_strength(model, data=ds(f), collators=right, batch_size=batch)
        ou.mem.exact_memorization(model, data=ds(f), collators=right, batch_size=batch)

    def mia_data():
        return {"forget": ds(f), "holdout": ds(holdout_split_for(forget))}

    def mia():
        for cls, kw in ((ou.loss, {}), (ou.zlib, {"tokenizer": tok}), (ou.min_k, {"k": MIN_K}), (ou.min_k_pp, {"k": MIN_K})):
            ou.mia_auc(cls, model, data=mia_data(), collator=right, batch_size=batch, **kw)

    def gradient():
        ou.mia_auc(ou.gradnorm, model, data=mia_data(), collator=right, batch_size=1, p=2)

    return {"probability": probability, "generation": generation, "memorization": memorization, "mia": mia,
            "gradient": gradient}


def compare(model_dir: str, data: str, src: str, repeats: int, items: int, batch: int, new_tokens: int,
            forget: str = "forget10") -> dict[str, Any]:
    """Time both evaluators per group, one thread; per group the CPU and wall seconds of each
    (all repeats) and the items uld counted. Runs in a fresh process (`uld bench`'s worker)."""
    import contextlib
    import io
    import logging
    import os

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from uld.data.prompts import PromptFormat
    from uld.eval.lm import HFLanguageModel
    from uld.eval.tasks.tofu import QAEncoder, load_tofu_data, score

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    ou = import_openunlearning(src)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    work = openunlearning_work(ou, model, tok, data, forget, items, batch, new_tokens)
    tofu = load_tofu_data(data, forget, max_items=items, mia=True, splits=("forget",))
    lm = HFLanguageModel(model, tok, batch_size=batch, device="cpu")
    encoder = QAEncoder(tok, PromptFormat("Question: {question}\nAnswer:", " ", False), "openunlearning", 512)
    out: dict[str, Any] = {}
    for group, names in GROUPS.items():
        counted: dict[str, int] = {}

        def progress(description: str, total: int, counted=counted):
            def tick(n: int) -> None:
                counted[description] = counted.get(description, 0) + n
            return tick

        def run_uld(names=names, progress=progress):
            score(lm, encoder, tofu, list(names), max_new_tokens=new_tokens, progress=progress)

        rows: dict[str, list[list[float]]] = {"openunlearning": [], "uld": []}
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):  # OpenUnlearning's tqdm bars
            work[group]()  # warm-up: the datasets' cache files, first calls
            run_uld()
            for _ in range(repeats):
                for side, fn in (("openunlearning", work[group]), ("uld", run_uld)):
                    counted.clear()
                    cpu, wall = time.process_time(), time.perf_counter()
                    fn()
                    rows[side].append([time.process_time() - cpu, time.perf_counter() - wall])
        out[group] = {"metrics": list(names), "items": sum(counted.values()), **rows}
    # one evaluation of every group's metrics: uld shares the forget answers' pass between the
    # probability, memorization and MIA metrics; OpenUnlearning's metric functions share nothing
    together = [n for names in GROUPS.values() for n in names]
    times = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        score(lm, encoder, tofu, together, max_new_tokens=new_tokens)
        times.append([time.process_time() - cpu, time.perf_counter() - wall])
    out["together"] = {"metrics": together, "uld": times}
    return out


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """Per group the median CPU seconds of each side, uld's items/s and the ratio
    OpenUnlearning / uld; overall: the sums over the groups."""
    import statistics

    groups: dict[str, Any] = {}
    for group, row in raw.items():
        if group == "together":
            continue
        ou_cpu = statistics.median(r[0] for r in row["openunlearning"])
        uld_cpu = statistics.median(r[0] for r in row["uld"])
        groups[group] = {"items": row["items"], "openunlearning_cpu_s": ou_cpu, "uld_cpu_s": uld_cpu,
                         "openunlearning_items_per_s": row["items"] / ou_cpu if ou_cpu > 0 else None,
                         "uld_items_per_s": row["items"] / uld_cpu if uld_cpu > 0 else None,
                         "ratio": ou_cpu / uld_cpu if uld_cpu > 0 else None,
                         "all": {"openunlearning": row["openunlearning"], "uld": row["uld"]}}
    ou_total = sum(g["openunlearning_cpu_s"] for g in groups.values())
    uld_total = sum(g["uld_cpu_s"] for g in groups.values())
    out = {"groups": groups, "openunlearning_cpu_s": ou_total, "uld_cpu_s": uld_total,
           "ratio": ou_total / uld_total if uld_total > 0 else None}
    if "together" in raw:  # OpenUnlearning's functions share no work: its time is the groups' sum
        one = statistics.median(r[0] for r in raw["together"]["uld"])
        out["together"] = {"uld_cpu_s": one, "openunlearning_cpu_s": ou_total, "ratio": ou_total / one if one > 0 else None,
                           "all": raw["together"]["uld"]}
    return out


def markdown(cmp: dict[str, Any]) -> list[str]:
    """The comparison's lines in bench.md."""
    if "skipped" in cmp:
        return [cmp["skipped"] + ".", ""]
    lines = ["Against OpenUnlearning (its TOFU metric functions on the same model, records and work; forget "
             "split, MIA forget vs holdout; one thread; median CPU seconds):", "",
             "| group | items | OpenUnlearning s | uld s | OpenUnlearning items/s | uld items/s | uld faster |",
             "|---|---|---|---|---|---|---|"]
    for g, row in cmp["groups"].items():
        lines.append(f"| {g} | {row['items']} | {row['openunlearning_cpu_s']:.3f} | {row['uld_cpu_s']:.3f} | "
                     f"{row['openunlearning_items_per_s']:.1f} | {row['uld_items_per_s']:.1f} | {row['ratio']:.2f}x |")
    lines.append(f"| all groups, each alone | | {cmp['openunlearning_cpu_s']:.3f} | {cmp['uld_cpu_s']:.3f} | | | {cmp['ratio']:.2f}x |")
    if "together" in cmp:
        t = cmp["together"]
        lines.append(f"| all groups in one evaluation | | {t['openunlearning_cpu_s']:.3f} | {t['uld_cpu_s']:.3f} | | | "
                     f"{t['ratio']:.2f}x |")
    return lines + [""]
