"""What `uld bench` runs on: its sizes (`BenchSizes`, `--size KEY=VALUE`), the default miniature
(a random Llama over a BPE tokenizer trained on the built-in world's text), and the data of
`train`'s epoch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class BenchSizes:
    """Sizes of the default miniature and of each case; the defaults finish `all` in minutes."""

    hidden: int = 384
    """Hidden size of the benchmark Llama (LoRA r 32 then adds ~13 % to a block's multiply-adds and
    the head is ~0.4 of a block; at 192 they are ~27 % and ~0.9, far from any real model's)."""
    layers: int = 8
    """Decoder layers of the benchmark Llama (the assistant takes a quarter)."""
    vocab: int = 2048
    """BPE vocabulary trained on the world's text."""
    num_authors: int = 60
    """Authors of the built-in world (forget10 = the last 10 %)."""
    new_tokens: int = 128
    """Tokens generated per sequence in `generate`."""
    gen_batches: tuple[int, ...] = (1, 16)
    """Batch sizes of `generate`."""
    eval_items: int = 16
    """Items per TOFU split in `eval` (4 splits): one full batch of `eval_batch` per split."""
    eval_new_tokens: int = 32
    """Greedy tokens per item for ROUGE in `eval`."""
    eval_batch: int = 16
    """Batched evaluation's batch size (compared with batch size 1)."""
    train_batch: int = 32
    """Training batch size (ULD paper: 32)."""
    train_items: int = 0
    """Forget (and retain) items of `train`'s epoch (0 = the whole forget10 / retain90): a real
    model's epoch over TOFU's 400 forget QA takes minutes per method on a CPU."""


def parse_sizes(pairs: list[str], base: BenchSizes | None = None) -> BenchSizes:
    """`KEY=VALUE` overrides of the benchmark sizes (`--size train_items=64 --size gen_batches=1,16`)."""
    from dataclasses import fields, replace

    from uld.errors import UldError

    base = base or BenchSizes()
    known = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise UldError(f"--size takes KEY=VALUE with KEY one of {', '.join(known)}; got {pair!r}")
        try:
            if key == "gen_batches":
                parsed: Any = tuple(int(x) for x in value.split(",") if x.strip())
                ok = bool(parsed) and min(parsed) >= 1
            else:
                parsed = int(value)
                ok = parsed >= (0 if key == "train_items" else 1)
        except ValueError:
            ok = False
        if not ok:
            raise UldError(f"--size {key} needs {'positive integers separated by commas' if key == 'gen_batches' else 'a positive integer'}"
                           f"{' (0 = all)' if key == 'train_items' else ''}, got {value!r}")
        changes[key] = parsed
    return replace(base, **changes)




def prepare_miniature(work: Path, sizes: BenchSizes) -> tuple[str, str]:
    """Write the world's data and a random Llama + tokenizer under `work`; (model dir, data dir)."""
    import torch

    from uld.data.records import load_split
    from uld.data.tokenizer import train_bpe_tokenizer
    from uld.models.miniature import miniature_llama
    from uld.world import WorldConfig, write_world

    data = write_world(work / "data", WorldConfig(num_authors=sizes.num_authors))
    texts = [f"{r['question']} {r['answer']}" for r in load_split(str(data), "full")]
    tok = train_bpe_tokenizer(texts, vocab_size=sizes.vocab)
    torch.manual_seed(0)
    model_dir = work / "model"
    miniature_llama(tok, sizes.hidden, sizes.layers, sizes.hidden * 8 // 3, 4, 512).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return str(model_dir), str(data)


def train_data(data: str, work: Path, items: int) -> str:
    """`data` itself, or (items > 0) a directory holding the first `items` rows of its forget10 and
    retain90 for `train`'s epoch."""
    if items <= 0:
        return data
    from uld.data.records import load_split
    from uld.io import atomic_write_text

    out = work / "train-data"
    for split in ("forget10", "retain90"):
        rows = load_split(data, split)[:items]
        atomic_write_text(out / f"{split}.json", "".join(json.dumps(r) + "\n" for r in rows))
    return str(out)
