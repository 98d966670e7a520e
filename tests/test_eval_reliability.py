"""`uld eval` refuses bad input with one sentence and exit 2, before any work and without
creating or changing a file; options of the new protocol and metric selector, end to end."""

import json

import pytest

from uld.cli import main

FAST = ["--max-items", "2", "--max-new-tokens", "3", "--batch-size", "4", "--no-mia"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from uld.testing import tiny_llama, tiny_tokenizer

    d = tmp_path_factory.mktemp("tiny_model")
    tiny_llama().save_pretrained(d)
    tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    from conftest import TOFU_DIR

    if not TOFU_DIR.is_dir():
        pytest.skip("TOFU mirror absent")
    out = tmp_path_factory.mktemp("ref") / "ref"
    assert main(["eval", "--model", str(model_dir), "--data", str(TOFU_DIR), "--forget", "forget01", "--out", str(out), *FAST]) == 0
    return out


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
        (["--device", "cuda:7"], "--device 'cuda:7'"),
        (["--max-length", "5"], "--max-length 5 leaves no room for the answer"),
        (["--protocol", "openunlearnin"], "did you mean 'openunlearning'"),
        (["--metrics", "forget_qualty"], "did you mean 'forget_quality'"),
        (["--prompt-template", "Q: {q}"], "--prompt-template"),
        (["--metrics", "mia_reference"], "--reference-model"),
    ],
)
def test_bad_options_exit_2_with_one_sentence_and_write_nothing(extra, expected, model_dir, tofu_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = [a for a in FAST if a != "--no-mia" or "mia_reference" not in extra]
    rc = main(["eval", "--model", str(model_dir), "--data", str(tofu_dir), "--forget", "forget01", "--out", str(out), *args, *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err and err.strip().count("\n") == 0, err
    assert not out.exists()


def test_output_that_would_replace_the_reference_is_refused(reference, model_dir, tofu_dir, capsys):
    before = {p.name: p.read_bytes() for p in reference.iterdir()}
    for out in (reference, reference / "TOFU_EVAL.json"):
        rc = main(["eval", "--model", str(model_dir), "--data", str(tofu_dir), "--forget", "forget01",
                   "--out", str(reference if out == reference else reference), "--reference", str(out), *FAST])
        err = capsys.readouterr().err
        assert rc == 2 and "would overwrite the --reference" in err, err
    assert {p.name: p.read_bytes() for p in reference.iterdir()} == before


def test_protocol_metrics_and_template_end_to_end(reference, model_dir, tofu_dir, tmp_path):
    out = tmp_path / "ou"
    rc = main(["eval", "--model", str(model_dir), "--data", str(tofu_dir), "--forget", "forget01", "--out", str(out),
               "--protocol", "openunlearning", "--prompt-template", "qa", "--metrics", "forget_Q_A_ROUGE,memorization", *FAST])
    assert rc == 0
    metrics = json.loads((out / "TOFU_EVAL.json").read_text())
    assert set(metrics) == {"forget_Q_A_ROUGE", "extraction_strength", "exact_memorization"}
    item = metrics["forget_Q_A_ROUGE"]["value_by_index"]["0"]
    assert {"rouge1_recall", "rougeL_f1", "rougeL_recall"} <= set(item)
    assert json.loads((out / "TOFU_UNAVAILABLE.json").read_text()) == {}


def test_recorded_prompt_of_a_run_is_used(model_dir, tmp_path):
    """A `uld unlearn` run records its prompt settings in config.yaml; `uld eval` reads them."""
    import shutil

    from uld.eval.config import EvalConfig
    from uld.eval.run import prompt_format_for

    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "model")
    (run / "config.yaml").write_text("data:\n  template: \"Q: {question}\\nA:\"\n  answer_prefix: ' '\n  use_chat_template: false\n")
    fmt = prompt_format_for(EvalConfig(), str(run / "model"))
    assert fmt.template == "Q: {question}\nA:" and fmt.use_chat_template is False
    assert prompt_format_for(EvalConfig(prompt_template="tofu"), str(run / "model")).template == "[INST] {question} [/INST]"
