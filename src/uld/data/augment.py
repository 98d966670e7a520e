"""ULD's data augmentation (Ji et al. 2024, §4.2: without it, forget quality on TOFU forget10
falls from 0.52 to 1e-7).

    D'_f = forget QAs + paraphrased versions of them            (paper: 2 per pair)
    D'_r = retain QAs, as many as forget QAs
           + forget *questions* paired with wrong answers         (paper: 2 per question)

The paraphrases and wrong answers come from one of:
- (a) fields of the forget records: `paraphrased_answer`, `paraphrased_question`,
  `perturbed_answer` (each a string or a list). On TOFU these are the evaluation's own
  paraphrases and wrong answers, so training on them leaks the evaluation: refused unless the
  user allows it explicitly (`augment.allow_eval_fields`), and the choice is recorded in the run.
- (b) an augmentation file, JSON lines `{"question", "answer", "paraphrases": [...],
  "distractors": [...]}` matched to the forget records by question (what `uld augment` writes).
  A paraphrase is a string (the answer restated) or `{"question", "answer"}` (both restated).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uld.data.records import Record, as_list, check_record
from uld.errors import UldError
from uld.io import read_text

EVAL_FIELDS = ("paraphrased_answer", "paraphrased_question", "perturbed_answer")


@dataclass
class AugmentedData:
    """D'_f and D'_r as record lists, and what was done (saved in the run's `run.json`)."""

    forget: list[Record]
    retain: list[Record]
    report: dict[str, Any] = field(default_factory=dict)


def has_eval_fields(records: list[Record]) -> bool:
    return any(any(r.get(k) for k in EVAL_FIELDS) for r in records)


def _norm(q: str) -> str:
    return " ".join(str(q).split()).lower()


def variants_from_fields(record: Record) -> tuple[list[Record], list[str]]:
    """(paraphrased QAs, wrong answers) from a record's TOFU-style fields."""
    q, a = record["question"], record["answer"]
    paras = [{"question": q, "answer": p} for p in as_list(record.get("paraphrased_answer"))]
    paras += [{"question": pq, "answer": a} for pq in as_list(record.get("paraphrased_question"))]
    return paras, as_list(record.get("perturbed_answer"))


def read_augment_file(path: str | Path) -> dict[str, tuple[list[Record], list[str]]]:
    """Question (normalised) -> (paraphrased QAs, wrong answers) from an augmentation file."""
    p = Path(path)
    if not p.is_file():
        raise UldError(f"augmentation file {str(p)!r} does not exist")
    out: dict[str, tuple[list[Record], list[str]]] = {}
    for n, line in enumerate(read_text(p).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UldError(f"line {n} of augmentation file {p} is not valid JSON ({e.msg})") from e
        if not isinstance(row, dict) or "question" not in row or "answer" not in row:
            raise UldError(f"line {n} of augmentation file {p} needs fields question and answer")
        check_record({k: v for k, v in row.items() if k != "paraphrases"}, f"line {n} of augmentation file {p}")
        paras = []
        for x in row.get("paraphrases") or []:
            if isinstance(x, dict):
                paras.append({"question": x.get("question", row["question"]), "answer": x.get("answer", row["answer"])})
            elif isinstance(x, str) and x.strip():
                paras.append({"question": row["question"], "answer": x})
            else:
                raise UldError(f"line {n} of augmentation file {p}: each paraphrase must be a non-empty string "
                               f"or a {{question, answer}} object, got {str(x)[:40]!r}")
        out[_norm(row["question"])] = (paras, as_list(row.get("distractors")))
    return out


def augment_for_uld(
    forget: list[Record],
    retain: list[Record],
    source: str = "auto",
    file: str | Path | None = None,
    num_paraphrases: int = 2,
    num_distractors: int = 2,
    allow_eval_fields: bool = False,
    seed: int = 0,
) -> AugmentedData:
    """Build D'_f and D'_r (see the module docstring). `source`: 'auto', 'none', 'fields', 'file'.

    'auto' uses the file when one is given, else the records' fields when they have any, else
    nothing (D'_f = forget, D'_r = sampled retain). Raises `UldError` when the records' fields
    would be used without `allow_eval_fields`.
    """
    if source == "auto":
        source = "file" if file else ("fields" if has_eval_fields(forget) else "none")
    if source == "fields" and not allow_eval_fields:
        raise UldError(
            "the forget records carry paraphrased/perturbed answers, which on TOFU are the evaluation's own "
            "(training on them leaks the evaluation); pass --allow-eval-augmentation to use them anyway, "
            "give an augmentation file (--augment-file, see `uld augment`), or set augment.source=none"
        )
    lookup = read_augment_file(file) if source == "file" else {}
    rng = random.Random(seed)
    d_f: list[Record] = []
    wrong: list[Record] = []
    missing = 0
    for r in forget:
        d_f.append({"question": r["question"], "answer": r["answer"], "kind": "forget"})
        if source == "none":
            continue
        if source == "fields":
            paras, distractors = variants_from_fields(r)
        else:
            paras, distractors = lookup.get(_norm(r["question"]), ([], []))
            missing += _norm(r["question"]) not in lookup
        d_f += [{**p, "kind": "paraphrase"} for p in paras[:num_paraphrases]]
        wrong += [{"question": r["question"], "answer": d, "kind": "distractor"} for d in distractors[:num_distractors]]
    # Retain QAs, as many as forget QAs (a fixed random subset, so D'_r is balanced as in the paper).
    picked = rng.sample(range(len(retain)), min(len(forget), len(retain))) if retain else []
    d_r = [{"question": retain[i]["question"], "answer": retain[i]["answer"], "kind": "retain"} for i in sorted(picked)]
    d_r += wrong
    report = {
        "source": source,
        "allow_eval_fields": allow_eval_fields,
        "file": str(file) if source == "file" else None,
        "forget_pairs": len(forget),
        "paraphrases": len(d_f) - len(forget),
        "distractors": len(wrong),
        "retain_pairs": len(picked),
        "forget_without_augmentation": missing if source == "file" else None,
    }
    return AugmentedData(d_f, d_r, report)


# --------------------------------------------------------------------------------------------
# (c) Writing an augmentation file with a local instruct model (`uld augment`).

PARAPHRASE_PROMPT = (
    "Rewrite the answer below in different words. Keep every fact exactly as it is and add no new "
    "facts. Reply with the rewritten answer only.\nQuestion: {question}\nAnswer: {answer}\nRewritten answer:"
)
WRONG_PROMPT = (
    "Write a wrong answer to the question below. Keep the style and length of the correct answer, "
    "but change its key facts (names, places, dates, numbers, titles) so that it is false. Reply "
    "with the wrong answer only.\nQuestion: {question}\nCorrect answer: {answer}\nWrong answer:"
)


def _clean(text: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    return line.strip('"').strip()


def generate_augmentations(
    model,
    tokenizer,
    records: list[Record],
    num_paraphrases: int = 2,
    num_distractors: int = 2,
    max_new_tokens: int = 64,
    temperature: float = 0.9,
    batch_size: int = 8,
    progress=None,
) -> list[dict[str, Any]]:
    """One row per record: {question, answer, paraphrases [...], distractors [...]}.

    Each record gets one paraphrase prompt and one wrong-answer prompt, each sampled
    `num_*` times; a sample is kept when it is non-empty, not the answer itself and new.
    `progress(n)` is called with the number of records finished.
    """
    import torch

    from uld.data.collate import left_pad

    def prompt_ids(text: str) -> list[int]:
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(tokenizer(text)["input_ids"])

    def sample(prompts: list[str], n: int) -> list[list[str]]:
        if n == 0:
            return [[] for _ in prompts]
        ids = [prompt_ids(p) for p in prompts]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        x, mask = left_pad(ids, pad)  # generation continues every row at the end
        width = x.shape[1]
        device = next(model.parameters()).device
        with torch.no_grad():
            out = model.generate(input_ids=x.to(device), attention_mask=mask.to(device), do_sample=True,
                                 temperature=temperature, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    rows = []
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        paras = sample([PARAPHRASE_PROMPT.format(**r) for r in chunk], num_paraphrases)
        wrongs = sample([WRONG_PROMPT.format(**r) for r in chunk], num_distractors)
        for r, ps, ws in zip(chunk, paras, wrongs, strict=True):
            seen = {_norm(r["answer"])}
            keep: dict[str, list[str]] = {"paraphrases": [], "distractors": []}
            for key, texts in (("paraphrases", ps), ("distractors", ws)):
                for t in map(_clean, texts):
                    if t and _norm(t) not in seen:
                        seen.add(_norm(t))
                        keep[key].append(t)
            rows.append({"question": r["question"], "answer": r["answer"], **keep})
        if progress:
            progress(len(chunk))
    return rows
