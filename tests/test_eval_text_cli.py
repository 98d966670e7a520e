"""`uld eval --task muse|copyright` on the synthetic books with a tiny saved model."""

import json

import pytest

from uld.cli import main
from uld.world.books import BooksConfig, write_books


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from uld.testing import tiny_llama, tiny_tokenizer

    root = tmp_path_factory.mktemp("text-cli")
    model_dir = root / "model"
    tiny_llama().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    books = write_books(root / "books", BooksConfig(forget_books=1, retain_books=2, holdout_books=1, chapters=2))
    return root, model_dir, books


def test_eval_task_muse_writes_openunlearning_files(setup):
    root, model_dir, books = setup
    out = root / "muse-out"
    rc = main(["eval", "--task", "muse", "--model", str(model_dir), "--data", str(books), "--out", str(out),
               "--max-items", "2", "--max-new-tokens", "4", "--max-length", "128", "--batch-size", "2", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "MUSE_SUMMARY.json").read_text())
    assert set(summary) == {"forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "mia_min_k", "privleak"}
    full = json.loads((out / "MUSE_EVAL.json").read_text())
    assert len(full["forget_verbmem_ROUGE"]["value_by_index"]) == 2


def test_eval_task_copyright_writes_its_files(setup):
    root, model_dir, books = setup
    out = root / "cp-out"
    rc = main(["eval", "--task", "copyright", "--model", str(model_dir), "--data", str(books), "--out", str(out),
               "--max-items", "2", "--max-new-tokens", "4", "--max-length", "128", "--device", "cpu"])
    assert rc == 0
    summary = json.loads((out / "COPYRIGHT_SUMMARY.json").read_text())
    assert {"copyright_BLEU", "copyright_ROUGE_L", "heldout_word_perplexity", "mc_mean_acc"} <= set(summary)


def test_eval_task_muse_on_a_directory_without_muse_files_exits_2(setup, tmp_path):
    root, model_dir, _ = setup
    assert main(["eval", "--task", "muse", "--model", str(model_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
