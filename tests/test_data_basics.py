"""Records loading and QA encoding (prompt/answer tokenised separately)."""

import json

import pytest

from uld.data import PromptFormat, encode_qa, load_split
from uld.data.prompts import IGNORE_INDEX
from uld.errors import UldError


def test_encode_qa_masks_prompt_and_scores_first_answer_token(tokenizer):
    fmt = PromptFormat()
    enc = encode_qa(tokenizer, "Where was the author born?", "Paris.", fmt)
    p = fmt.prompt_ids(tokenizer, "Where was the author born?")
    a = tokenizer(" Paris.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert enc.input_ids == p + a
    assert enc.labels == [IGNORE_INDEX] * len(p) + a
    assert enc.input_ids[0] == tokenizer.bos_token_id
    assert enc.num_answer_tokens == len(a)


def test_encode_qa_truncates_answer_not_prompt(tokenizer):
    enc = encode_qa(tokenizer, "Where was the author born?", "The author was born in Paris " * 5, max_length=20)
    assert len(enc.input_ids) == 20 and enc.truncated
    assert enc.num_answer_tokens == 20 - enc.prompt_len


def test_load_split_json_lines_and_array(tmp_path):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    assert load_split(tmp_path, "a") == rows == load_split(tmp_path, "b")


def test_load_split_errors_are_one_sentence(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"question": "q"}]))
    (tmp_path / "e.json").write_text("[]")
    with pytest.raises(UldError, match="split 'zz' not found.*available splits: a, e"):
        load_split(tmp_path, "zz")
    with pytest.raises(UldError, match="lacks field"):
        load_split(tmp_path, "a")
    with pytest.raises(UldError, match="is empty"):
        load_split(tmp_path, "e")


def test_tofu_mirror_loads(tofu_dir):
    rows = load_split(tofu_dir, "forget10_perturbed")
    assert len(rows) == 400 and len(rows[0]["perturbed_answer"]) == 5


def test_left_pad_ends_every_row_at_the_last_column():
    from uld.data.collate import left_pad

    ids, mask = left_pad([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_right_pad_starts_every_row_at_the_first_column():
    from uld.data.collate import right_pad

    ids, mask = right_pad([[5, 6, 7], [8], []], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
