"""`uld generate` on a ULD directory and on a plain transformers directory."""

import pytest
import torch

from uld import ULDForCausalLM, build_assistant
from uld.cli import main
from uld.cli.generate import build_prompt
from uld.testing import tiny_llama

QUESTION = "Where was the author born?"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("gen")
    target = tiny_llama()
    with torch.no_grad():  # a peaked head, so that the plausibility filter cuts something
        target.lm_head.weight.mul_(30)
    target.save_pretrained(root / "plain")
    tokenizer.save_pretrained(root / "plain")
    assistant = build_assistant(target, num_layers=1, lora_rank=4)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in assistant.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    ULDForCausalLM(target, assistant, assistant_weight=0.75).save_pretrained(root / "uld", tokenizer=tokenizer)
    return root


def expected_completion(model, tokenizer, question, n):
    prompt = f"[INST] {question} [/INST]"  # TOFU's format: the tiny tokenizer has no chat template
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.eval().generate(input_ids=ids, max_new_tokens=n, do_sample=False,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["uld", "plain"])
def test_generate_prints_the_greedy_completion(dirs, tokenizer, capsys, kind):
    from uld.models.loading import load_model

    rc = main(["generate", "--model", str(dirs / kind), "--prompt", QUESTION, "--max-new-tokens", "6"])
    assert rc == 0
    model, _ = load_model(dirs / kind)
    assert isinstance(model, ULDForCausalLM) == (kind == "uld")
    assert capsys.readouterr().out == expected_completion(model, tokenizer, QUESTION, 6) + "\n"


def test_sampling_with_a_seed_is_reproducible(dirs, capsys):
    args = ["generate", "--model", str(dirs / "uld"), "--prompt", QUESTION, "--prompt", "Hi",
            "--max-new-tokens", "8", "--sample", "--temperature", "1.5", "--top-k", "50"]
    outs = []
    for seed in ("1", "1", "2"):
        assert main(args + ["--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] != outs[2]
    assert outs[0].startswith("[1] ") and "\n[2] " in outs[0]


def test_chat_template_is_applied_unless_disabled(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{% for m in messages %}<s>USER: {{ m['content'] }}\n{% endfor %}ASSISTANT:"
    assert build_prompt(tok, "Hi?") == "<s>USER: Hi?\nASSISTANT:"
    assert build_prompt(tok, "Hi?", use_chat_template=False) == "[INST] Hi? [/INST]"
    assert build_prompt(tokenizer, "Hi?") == "[INST] Hi? [/INST]"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--top-k", "3"], "--top-k applies only with --sample"),
        (["--sample", "--temperature", "0"], "--temperature must be a finite number above 0, got 0.0"),
        (["--sample", "--temperature", "nan"], "--temperature must be a finite number above 0, got nan"),
        (["--sample", "--temperature", "-1"], "--temperature must be a finite number above 0, got -1.0"),
        (["--sample", "--temperature", "inf"], "--temperature must be a finite number above 0, got inf"),
        (["--sample", "--top-p", "0"], "--top-p must be in (0, 1], got 0.0"),
        (["--sample", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (["--sample", "--top-p", "nan"], "--top-p must be in (0, 1], got nan"),
        (["--sample", "--top-k", "-1"], "--top-k must be >= 0 (0 = off), got -1"),
        (["--temperature", "nan"], "--temperature must be a finite number above 0, got nan"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be at least 1"),
        (["--assistant-weight", "nan"], "option --assistant-weight must be a finite number, got nan"),
        (["--assistant-weight", "-2"], "option --assistant-weight must be >= 0, got -2"),
        (["--filter-rate", "5"], "option --filter-rate must be in [0, 1], got 5"),
        (["--device", "gpu"], "--device 'gpu' is not a torch device"),
        (["--device", "cuda:7"], "--device 'cuda:7'"),
    ],
)
def test_bad_options_exit_2_with_one_sentence(dirs, capsys, monkeypatch, extra, message):
    """Refused before the model loads: loading it would fail the test."""
    import uld.models.loading

    monkeypatch.setattr(uld.models.loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["generate", "--model", str(dirs / "uld"), "--prompt", "x", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_prompt_longer_than_the_context_is_refused(dirs, capsys):
    """The tiny model has 256 positions: 300 words do not fit (transformers would only warn)."""
    from uld.cli import main as run

    assert run(["generate", "--model", str(dirs / "plain"), "--prompt", "word " * 300, "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "more than the model's context of 256 tokens" in err.strip().splitlines()[-1]
    assert run(["generate", "--model", str(dirs / "uld"), "--prompt", "word " * 300, "--max-new-tokens", "2"]) == 2
    assert "context of 256 tokens" in capsys.readouterr().err


def test_bad_models_exit_2(dirs, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["generate", "--model", str(dirs / "plain"), "--prompt", "x", "--alpha", "0.5"]) == 2
    assert "--assistant-weight applies only to a ULD run directory" in capsys.readouterr().err


def test_help_renders(capsys):
    assert main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--max-new-tokens" in out and "--no-chat-template" in out
