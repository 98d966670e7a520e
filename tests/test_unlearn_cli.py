"""`uld unlearn` end to end: every method trains from the CLI and improves its objective, runs
load back, bad input writes nothing, two processes really split the data."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import make_workspace, read_jsonl, write_jsonl

from uld.cli import main
from uld.methods import available_methods

# Options a 4-layer tiny model needs (RMU's paper layer 7 does not exist there).
EXTRA = {"rmu": ["--set", "loss.layer=1", "--set", "loss.update_layers=[0,1]", "--set", "train.lr=1e-2"]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("ws"))


def _args(workspace, out, method, *extra, forget="forget_plain"):
    model, data = workspace
    return ["unlearn", "--model", str(model), "--data", str(data), "--forget", forget, "--retain", "retain",
            "--method", method, "--out", str(out), "--set", "train.batch_size=2", "--set", "train.epochs=3",
            "--set", "train.lr=1e-3", *extra]


@pytest.mark.parametrize("method", available_methods())
def test_every_method_trains_from_the_cli_and_improves_its_objective(workspace, tmp_path, method):
    from uld.models.loading import load_model

    out = tmp_path / "run"
    assert main(_args(workspace, out, method, *EXTRA.get(method, []))) == 0
    epochs = [ln for ln in read_jsonl(out / "metrics.jsonl") if ln["type"] == "epoch"]
    assert len(epochs) == 3
    assert epochs[-1]["loss"] < epochs[0]["loss"], [e["loss"] for e in epochs]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["method"] == method and run["world_size"] == 1
    assert not (out / "checkpoints").exists()
    model, tok = load_model(out)
    ids = tok("[INST] Where was Ana born? [/INST]", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).logits).all()


def test_uld_run_generates_through_uld_generate(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(workspace, out, "uld")) == 0
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["generate", "--model", str(out), "--prompt", "Where was Ana born?", "--max-new-tokens", "4"]) == 0


def test_lora_policy_saves_a_peft_adapter(workspace, tmp_path):
    from uld.models.loading import load_model

    out = tmp_path / "run"
    assert main(_args(workspace, out, "gd", "--set", "policy.kind=lora", "--set", "policy.lora_rank=4")) == 0
    assert (out / "adapter_config.json").is_file()
    model, _ = load_model(out)
    assert type(model).__name__.startswith("Peft")


def test_eval_fields_need_the_flag_and_the_choice_is_recorded(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(workspace, out, "uld", forget="forget")) == 2
    assert "allow-eval-augmentation" in capsys.readouterr().err and not out.exists()
    assert main(_args(workspace, out, "uld", "--allow-eval-augmentation", forget="forget")) == 0
    aug = json.loads((out / "run.json").read_text())["augmentation"]
    assert aug["source"] == "fields" and aug["allow_eval_fields"] is True and aug["paraphrases"] == 4


def _bad_data(tmp_path: Path, workspace) -> Path:
    d = tmp_path / "bad"
    shutil.copytree(workspace[1], d)
    write_jsonl(d / "noanswer.json", [{"question": "Who?", "reply": "Ana."}])
    (d / "empty.json").write_text("")
    return d


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--forget": "forget99"}, "split 'forget99' not found"),
        ({"--forget": "noanswer"}, "lacks field(s) answer"),
        ({"--forget": "empty"}, "is empty"),
        ({"--method": "npo2"}, "unknown method 'npo2'; did you mean 'npo'"),
        ({"--set": "train.lrr=1"}, "unknown option 'train.lrr'"),
        ({"--set": "loss.gamma=2"}, "unknown option 'loss.gamma'"),
        ({"--model": "EMPTY_DIR"}, "holds no transformers model"),
    ],
)
def test_bad_input_exits_nonzero_with_one_sentence_and_writes_no_run_dir(workspace, tmp_path, capsys, change, message):
    args = _args((workspace[0], _bad_data(tmp_path, workspace)), tmp_path / "run", "uld")
    for flag, value in change.items():
        args[args.index(flag) + 1] = str(tmp_path / "bad") if value == "EMPTY_DIR" else value
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_not_overwritten(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(_args(workspace, out, "ga")) == 2
    assert "--resume" in capsys.readouterr().err and (out / "keep.txt").read_text() == "x"


@pytest.mark.slow
def test_two_processes_train_uld_to_the_end_on_different_retain_samples(workspace, tmp_path):
    """torchrun starts 2 gloo processes; the run must record world size 2 and the ranks' logs
    must show disjoint retain samples at every step."""
    uld = Path(sys.executable).parent / "uld"
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp"
    args = _args(workspace, out, "uld", "--set", "train.batch_size=4")[1:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(uld), "unlearn", *args],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["status"] == "finished"
    r0, r1 = read_jsonl(out / "logs" / "samples-rank0.jsonl"), read_jsonl(out / "logs" / "samples-rank1.jsonl")
    assert len(r0) == len(r1) == 3  # 3 epochs x 1 step (4 forget items, 2 per rank)
    for a, b in zip(r0, r1, strict=True):
        assert a["step"] == b["step"] and a["retain"] and not set(a["retain"]) & set(b["retain"])
        assert not set(a["forget"]) & set(b["forget"])
    assert (out / "config.json").is_file()


def test_uld_augment_writes_a_file_that_uld_unlearn_trains_on(workspace, tmp_path):
    model, data = workspace
    aug = tmp_path / "aug.jsonl"
    rc = main(["augment", "--model", str(model), "--data", str(data), "--split", "forget_plain", "--out", str(aug),
               "--num-paraphrases", "2", "--num-distractors", "1", "--max-new-tokens", "6"])
    assert rc == 0
    rows = read_jsonl(aug)
    assert [r["question"] for r in rows] == [r["question"] for r in read_jsonl(data / "forget_plain.json")]
    assert all(len(r["paraphrases"]) <= 2 and len(r["distractors"]) <= 1 for r in rows)
    assert all(p != r["answer"] for r in rows for p in r["paraphrases"])
    out = tmp_path / "run"
    assert main(_args(workspace, out, "uld", "--augment-file", str(aug))) == 0
    report = json.loads((out / "run.json").read_text())["augmentation"]
    assert report["source"] == "file" and report["forget_without_augmentation"] == 0
    assert report["paraphrases"] == sum(len(r["paraphrases"]) for r in rows)
    assert report["distractors"] == sum(len(r["distractors"]) for r in rows)


def test_augment_rejects_a_missing_split(workspace, tmp_path, capsys):
    model, data = workspace
    rc = main(["augment", "--model", str(model), "--data", str(data), "--split", "nope", "--out", str(tmp_path / "a.jsonl")])
    assert rc == 2 and "split 'nope' not found" in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("extra, message", [
    (["--temperature", "nan"], "--temperature must be a finite number above 0, got nan"),
    (["--temperature", "0"], "--temperature must be a finite number above 0, got 0.0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
])
def test_augment_refuses_bad_sampling_options_before_loading(workspace, tmp_path, capsys, extra, message):
    model, data = workspace
    rc = main(["augment", "--model", str(model), "--data", str(data), "--split", "forget_plain",
               "--out", str(tmp_path / "a.jsonl"), *extra])
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "a.jsonl").exists()


def test_augment_refuses_to_write_over_the_split_it_reads(workspace, capsys):
    """`--out DATA/forget_plain.json` used to replace the forget split with its augmentation."""
    model, data = workspace
    before = (data / "forget_plain.json").read_bytes()
    rc = main(["augment", "--model", str(model), "--data", str(data), "--split", "forget_plain",
               "--out", str(data / "forget_plain.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "is the input --split forget_plain (.json)" in err and len(err.strip().splitlines()) == 1
    assert (data / "forget_plain.json").read_bytes() == before


def test_tofu_mirror_eval_fields_are_refused_then_recorded_when_allowed(workspace, tofu_dir, tmp_path, capsys):
    model, _ = workspace
    args = ["unlearn", "--model", str(model), "--data", str(tofu_dir), "--forget", "forget01_perturbed",
            "--retain", "retain99", "--method", "uld", "--out", str(tmp_path / "run"),
            "--set", "train.epochs=1", "--set", "train.batch_size=40", "--set", "train.micro_batch_size=20",
            "--set", "data.max_length=48"]
    assert main(args) == 2
    assert "evaluation" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main([*args, "--allow-eval-augmentation"]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    # D'_f = 40 forget + 40 paraphrased answers + 40 paraphrased questions (2 per pair);
    # D'_r = 40 retain + 80 wrong answers; long answers cut to 48 tokens are counted.
    assert run["data"]["train_forget_items"] == 120 and run["data"]["train_retain_items"] == 120
    assert run["augmentation"]["allow_eval_fields"] is True
    assert run["data"]["truncated"]["forget"] > 0
