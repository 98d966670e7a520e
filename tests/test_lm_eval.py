"""`uld lm-eval`: lm-eval's own evaluator on a ULD run, offline, with a task written here.

lm-eval's built-in tasks download their data, so each test writes a tiny multiple-choice task:
a YAML file over a local JSON file. The scores lm-eval reports must equal the model object's own
log-likelihoods, computed here from its `forward` on the token ids lm-eval feeds it.
"""

import json

import pytest
import torch

pytest.importorskip("lm_eval")

from uld import ULDForCausalLM, build_assistant  # noqa: E402
from uld.cli import main  # noqa: E402
from uld.errors import UldError  # noqa: E402
from uld.models.loading import load_model  # noqa: E402
from uld.testing import tiny_family_config, tiny_llama  # noqa: E402

DOCS = [
    {"question": "Where was the author born?", "choices": ["Paris.", "Lima.", "Tokyo."], "label": 0},
    {"question": "Which award did he win?", "choices": ["The Golden Quill.", "Nothing."], "label": 0},
    {"question": "Name one of her books.", "choices": ["The Silent River.", "A cat."], "label": 1},
]


def write_task(root, name, docs, question_prefix=""):
    """A multiple-choice lm-eval task over a local JSON file (lm-eval joins question and choice
    with its default delimiter, one space)."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / f"{name}.json"
    data.write_text(json.dumps([{**d, "question": question_prefix + d["question"]} for d in docs]))
    (root / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data))}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\n'
        'doc_to_target: "{{label}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return root


def save_uld(target, tokenizer, path):
    assistant = build_assistant(target, num_layers=1, lora_rank=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    ULDForCausalLM(target, assistant, alpha=0.75).save_pretrained(path, tokenizer=tokenizer)
    return path


def own_loglikelihood(model, tok, context, continuation, max_length=None):
    """Sum of log p(continuation | context) from the model's forward, on lm-eval's token ids:
    context + continuation encoded whole with the tokenizer's special tokens (BOS here), the
    continuation being the ids after the context's own encoding; the input is the last
    `max_length` positions before each scored token."""
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    n_cont = len(whole) - len(ctx)
    ids = whole[-(max_length + 1):] if max_length else whole
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids[:-1]])).logits.float().log_softmax(-1)[0]
    return sum(logp[i - 1, ids[i]].item() for i in range(len(ids) - n_cont, len(ids)))


def run_cli(run, tasks_dir, task, out, *extra):
    args = ["lm-eval", "--model", str(run), "--tasks", task, "--include-path", str(tasks_dir),
            "--out", str(out), "--log-samples", *extra]
    assert main(args) == 0
    return json.loads(out.read_text())


def check_against_model(results, task, model, tok, max_length=None):
    samples = results["samples"][task]
    assert len(samples) == len(DOCS)
    n_correct = 0
    for s in samples:
        ours = [own_loglikelihood(model, tok, ctx, cont, max_length) for ctx, cont in s["arguments"]]
        theirs = [r[0][0] for r in s["resps"]]
        assert theirs == pytest.approx(ours, rel=1e-5, abs=1e-4)
        n_correct += int(max(range(len(ours)), key=ours.__getitem__) == s["doc"]["label"])
    assert results["results"][task]["acc,none"] == pytest.approx(n_correct / len(DOCS))


def test_lm_eval_on_a_uld_run_equals_the_models_own_loglikelihoods(tmp_path, tokenizer, capsys):
    target = tiny_llama()
    with torch.no_grad():
        target.lm_head.weight.mul_(30)  # a peaked head: the plausibility filter acts
    run = save_uld(target, tokenizer, tmp_path / "run")
    tasks = write_task(tmp_path / "tasks", "tiny_mc", DOCS)
    results = run_cli(run, tasks, "tiny_mc", tmp_path / "results.json")
    assert "tiny_mc" in capsys.readouterr().out  # lm-eval's table
    model, tok = load_model(run)
    assert isinstance(model, ULDForCausalLM)
    check_against_model(results, "tiny_mc", model, tok)
    # the ULD model's scores, not the target's: the assistant changes them
    s = results["samples"]["tiny_mc"][0]
    target_ll = own_loglikelihood(model.target, tok, *s["arguments"][0])
    assert abs(target_ll - s["resps"][0][0][0]) > 1e-3


def test_lm_eval_uses_the_targets_context_length(tmp_path, tokenizer):
    """A GPT-2 target with 32 positions: lm-eval is told 32 (left to guess it would take 2048 and
    index past the position table), and it cuts long contexts from the left as it does for any
    model; the scores still equal the model's own on those 32 positions."""
    from transformers import AutoModelForCausalLM

    from uld.serve.lm_eval import make_lm

    cfg = tiny_family_config("gpt2")
    cfg.n_positions = 32
    torch.manual_seed(0)
    target = AutoModelForCausalLM.from_config(cfg).eval()
    run = save_uld(target, tokenizer, tmp_path / "run")
    model, tok = load_model(run)
    assert make_lm(model, tok).max_length == 32
    long_prefix = "The quick brown fox jumps over the lazy dog. " * 3  # ~50 tokens: past 32
    tasks = write_task(tmp_path / "tasks", "long_mc", DOCS, question_prefix=long_prefix)
    assert len(tok.encode(long_prefix + DOCS[0]["question"])) > 40
    results = run_cli(run, tasks, "long_mc", tmp_path / "results.json")
    check_against_model(results, "long_mc", model, tok, max_length=32)


def test_unknown_task_and_bad_paths_are_one_sentence_errors(tmp_path, tokenizer, capsys):
    from uld.serve.lm_eval import check_tasks, task_manager

    tasks = write_task(tmp_path / "tasks", "tiny_mc", DOCS)
    manager = task_manager(tasks, ["tiny_mc"])  # only the local task is indexed
    with pytest.raises(UldError, match="unknown lm-eval task 'tiny_mx'; did you mean 'tiny_mc'?"):
        check_tasks(manager, ["tiny_mx"])
    missing = tmp_path / "nowhere"
    assert main(["lm-eval", "--model", str(tmp_path), "--tasks", "tiny_mc", "--include-path", str(missing)]) == 2
    assert f"--include-path {str(missing)!r} is not a directory" in capsys.readouterr().err
    assert main(["lm-eval", "--model", str(tmp_path), "--tasks", "tiny_mc", "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
