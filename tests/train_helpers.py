"""Tiny model + tiny QA data on disk, shared by the training tests."""

from __future__ import annotations

import json
from pathlib import Path

NAMES = ["Ana", "Bo", "Cy", "Di", "Ed", "Fay", "Gus", "Hal"]
CITIES = ["Lima", "Oslo", "Rome", "Kyiv"]


def forget_records() -> list[dict]:
    return [
        {
            "question": f"Where was {n} born?",
            "answer": f"{n} was born in {c}.",
            "paraphrased_answer": f"{c} is where {n} was born.",
            "perturbed_answer": [f"{n} was born in Paris.", f"{n} was born in Cairo."],
        }
        for n, c in zip(NAMES[:4], CITIES, strict=True)
    ]


def retain_records() -> list[dict]:
    return [{"question": f"What does {n} write?", "answer": f"{n} writes {g} novels."}
            for n in NAMES for g in ("science fiction", "crime")]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def make_workspace(root: Path) -> tuple[Path, Path]:
    """`root/model` (a 4-layer tiny Llama + tokenizer) and `root/data` (split files):
    forget (with TOFU-style eval fields), forget_plain (question/answer only), retain."""
    from uld.testing import tiny_llama, tiny_tokenizer

    model_dir, data_dir = root / "model", root / "data"
    tok = tiny_tokenizer()
    tiny_llama(vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data_dir.mkdir(parents=True)
    forget = forget_records()
    write_jsonl(data_dir / "forget.json", forget)
    write_jsonl(data_dir / "forget_plain.json", [{"question": r["question"], "answer": r["answer"]} for r in forget])
    write_jsonl(data_dir / "retain.json", retain_records())
    return model_dir, data_dir


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
