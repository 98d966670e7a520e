"""Batches with label masks, the forget/retain pairing across ranks, and ULD's augmentation."""

import json

import pytest
from train_helpers import forget_records, retain_records

from uld.data.augment import augment_for_uld
from uld.data.collate import PairedSchedule, encode_records, pad_batch
from uld.data.prompts import IGNORE_INDEX
from uld.errors import UldError


def test_pad_batch_masks_prompt_and_padding(tokenizer):
    enc = encode_records(tokenizer, [{"question": "Who?", "answer": "Ana."}, {"question": "Where was Bo born?", "answer": "In Lima, long ago."}])
    b = pad_batch(enc.items, pad_id=0)
    short, long_ = enc.items
    t = len(long_.input_ids)
    assert b["input_ids"].shape == (2, t)
    assert b["attention_mask"][0].tolist() == [1] * len(short.input_ids) + [0] * (t - len(short.input_ids))
    assert b["labels"][0].tolist() == short.labels + [IGNORE_INDEX] * (t - len(short.input_ids))
    assert b["labels"][1, : long_.prompt_len].eq(IGNORE_INDEX).all()
    assert [e.meta["index"] for e in enc.items] == [0, 1]


def test_encode_records_counts_truncated_items(tokenizer):
    enc = encode_records(tokenizer, [{"question": "Q?", "answer": "word " * 40}, {"question": "Q?", "answer": "A."}], max_length=16)
    assert enc.truncated == 1


def test_forget_items_seen_once_per_epoch_across_ranks():
    ranks = [PairedSchedule(10, 0, micro_batch=2, seed=3, rank=r, world=2) for r in range(2)]
    seen = sorted(i for s in ranks for b in s.forget_indices(epoch=1) for i in b)
    assert seen == list(range(10))
    assert ranks[0].micro_steps == ranks[1].micro_steps == 3  # 5 per rank, micro-batch 2
    assert ranks[0].forget_indices(1) != ranks[0].forget_indices(2)  # reshuffled each epoch
    assert ranks[0].forget_indices(1) == PairedSchedule(10, 0, 2, 3, 0, 2).forget_indices(1)  # pure


def test_ranks_draw_disjoint_retain_samples_within_a_pass():
    ranks = [PairedSchedule(8, 40, micro_batch=4, seed=0, rank=r, world=2) for r in range(2)]
    r0 = [i for b in ranks[0].retain_indices(1) for i in b]
    r1 = [i for b in ranks[1].retain_indices(1) for i in b]
    assert len(r0) == len(r1) == 4 and not set(r0) & set(r1)
    sizes = [len(b) for b in ranks[0].retain_indices(1)]
    assert sizes == [len(b) for b in ranks[0].forget_indices(1)]


def test_retain_stream_cycles_when_smaller_than_forget():
    s = PairedSchedule(12, 3, micro_batch=4, seed=0)
    drawn = [i for b in s.retain_indices(1) for i in b]
    assert len(drawn) == 12 and sorted(set(drawn)) == [0, 1, 2]


def test_fields_augmentation_is_refused_without_the_flag():
    with pytest.raises(UldError, match="allow-eval-augmentation"):
        augment_for_uld(forget_records(), retain_records())


def test_fields_augmentation_builds_the_papers_sets():
    forget, retain = forget_records(), retain_records()
    aug = augment_for_uld(forget, retain, allow_eval_fields=True, num_paraphrases=2, num_distractors=2)
    # D'_f: 4 forget QAs + 1 paraphrased answer each (the records hold one); D'_r: 4 retain + 2 x 4 wrong.
    assert [r["kind"] for r in aug.forget].count("forget") == 4
    assert [r["kind"] for r in aug.forget].count("paraphrase") == 4
    assert [r["kind"] for r in aug.retain].count("retain") == 4
    wrong = [r for r in aug.retain if r["kind"] == "distractor"]
    assert len(wrong) == 8 and wrong[0]["question"] == forget[0]["question"]
    assert wrong[0]["answer"] == forget[0]["perturbed_answer"][0]
    assert aug.report["source"] == "fields" and aug.report["allow_eval_fields"] is True


def test_augmentation_file_is_matched_by_question(tmp_path):
    forget = [{"question": r["question"], "answer": r["answer"]} for r in forget_records()]
    f = tmp_path / "aug.jsonl"
    rows = [{"question": forget[0]["question"], "answer": forget[0]["answer"],
             "paraphrases": ["p1", {"question": "q'", "answer": "p2"}, "p3"], "distractors": ["w1"]}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    aug = augment_for_uld(forget, retain_records(), file=f, num_paraphrases=2)
    paras = [r for r in aug.forget if r["kind"] == "paraphrase"]
    assert [(p["question"], p["answer"]) for p in paras] == [(forget[0]["question"], "p1"), ("q'", "p2")]
    assert [r["answer"] for r in aug.retain if r["kind"] == "distractor"] == ["w1"]
    assert aug.report["source"] == "file" and aug.report["forget_without_augmentation"] == 3


def test_plain_records_get_no_augmentation():
    forget = [{"question": r["question"], "answer": r["answer"]} for r in forget_records()]
    aug = augment_for_uld(forget, retain_records())
    assert aug.report["source"] == "none" and len(aug.forget) == 4 and len(aug.retain) == 4
