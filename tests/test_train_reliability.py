"""`uld unlearn` under bad input, interrupts, a second run and resume: exit 2 with one sentence
and nothing created; Ctrl-C -> 130, status "interrupted", no partial files; one run per
directory; resume refuses option changes it cannot honour and works from any directory."""

import fcntl
import json
import shutil

import pytest
import yaml
from train_helpers import forget_records, make_workspace, retain_records, write_jsonl

from uld.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    model, data = make_workspace(tmp_path_factory.mktemp("ws"))
    first = forget_records()[0]
    write_jsonl(data / "overlap.json", retain_records()[:3] + [{"question": first["question"], "answer": first["answer"]}])
    return model, data


def _args(workspace, out, *extra, method="uld", forget="forget_plain", retain="retain"):
    model, data = workspace
    return ["unlearn", "--model", str(model), "--data", str(data), "--forget", forget, "--retain", retain,
            "--method", method, "--out", str(out), "--set", "train.batch_size=2", "--set", "train.epochs=2", *extra]


def _small_vocab_model(tmp_path):
    from uld.testing import tiny_llama, tiny_tokenizer

    tok = tiny_tokenizer()
    d = tmp_path / "small-vocab"
    tiny_llama(vocab_size=len(tok) - 10).save_pretrained(d)
    tok.save_pretrained(d)
    return d


BAD = [
    (["--set", "policy.num_layers=4"], {}, "option policy.num_layers=4 must satisfy 1 <= K < 4"),
    (["--set", "policy.lora_rank=-1"], {}, "option policy.lora_rank must be >= 0, got -1"),
    (["--set", "train.batch_size=4", "--set", "train.micro_batch_size=3"], {}, "is not a multiple of"),
    (["--set", "loss.beta=abc"], {}, "option loss.beta expects a float, got 'abc'"),
    (["--set", "loss.layer=9"], {"method": "rmu"}, "option loss.layer=9 is out of range for a model with 4 decoder layers"),
    (["--set", "loss.layer=1", "--set", "loss.update_layers=[1,7]"], {"method": "rmu"}, "option loss.update_layers=7 is out of range"),
    (["--set", "train.lr=nan"], {}, "option train.lr must be a finite number"),
    (["--set", "train.lr=inf"], {}, "option train.lr must be a finite number"),
    (["--set", "policy.assistant_weight=-2"], {}, "option policy.assistant_weight must be >= 0, got -2"),
    (["--set", "policy.alpha=0.5"], {}, "did you mean 'policy.assistant_weight'"),
    (["--set", "policy.filter_rate=5"], {}, "option policy.filter_rate must be in [0, 1], got 5"),
    (["--set", "loss.retain_weight=-1"], {"method": "npo_gd"}, "option loss.retain_weight must be >= 0"),
    ([], {"retain": "forget_plain"}, "the forget and retain splits are the same"),
    ([], {"retain": "overlap"}, "also in the forget split"),
    ([], {"forget": "../data/forget_plain"}, "must be a plain name"),
    ([], {"method": "sft"}, "unknown method 'sft'"),
    ([], {"model": "SMALL_VOCAB"}, "do not belong together"),
]


@pytest.mark.parametrize("extra, change, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_input_exits_2_with_one_sentence_and_creates_nothing(workspace, tmp_path, capsys, extra, change, message):
    model, data = workspace
    if change.get("model") == "SMALL_VOCAB":
        model = _small_vocab_model(tmp_path)
        capsys.readouterr()
    kw = {k: v for k, v in change.items() if k != "model"}
    out = tmp_path / "runs" / "run"
    assert main(_args((model, data), out, *extra, **kw)) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err
    assert not (tmp_path / "runs").exists()


def test_out_on_a_file_is_refused_in_one_sentence(workspace, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(_args(workspace, f)) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file" in err and err.count("\n") == 0 and f.read_text() == "x"


def test_ctrl_c_marks_the_run_interrupted_and_leaves_no_partial_files(workspace, tmp_path, capsys, monkeypatch):
    """Ctrl-C while the epoch-2 checkpoint is being written: the temporary checkpoint goes,
    epoch 1's stays, the CLI exits 130 with the resume hint as its one line (it used to print
    the hint and then "interrupted"), and --resume finishes the run."""
    from uld.train import checkpoint

    real_save = checkpoint.Checkpointer.save

    def save(self, run_dir, epoch, *a, **kw):
        if epoch == 2:
            (run_dir / "checkpoints" / ".epoch-2.tmp").mkdir(parents=True)
            raise KeyboardInterrupt
        return real_save(self, run_dir, epoch, *a, **kw)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    model, data = workspace
    out = tmp_path / "run"
    argv = ["unlearn", "--model", str(model), "--data", str(data), "--forget", "forget_plain", "--retain", "retain",
            "--method", "uld", "--set", "train.batch_size=2", "--set", "train.epochs=3", "--out", str(out)]
    assert main(argv) == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "Loading weights" not in ln]
    assert err == [f"interrupted; resume with `uld unlearn --out {out} --resume`"]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "interrupted" and run["last_checkpoint"] == "epoch-1"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-1"]
    assert not (out / "config.json").exists() and not (out / ".lock").exists()
    monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
    assert main(["unlearn", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_second_run_in_the_same_directory_is_refused(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(workspace, out, "--set", "train.stop_after_epoch=1")) == 0
    with open(out / ".lock", "w") as held:  # another process holds the run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        capsys.readouterr()
        assert main(["unlearn", "--out", str(out), "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert "another `uld unlearn` (pid 4242) is running in" in err and err.count("\n") == 0
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"


def test_resume_refuses_a_new_learning_rate_and_applies_a_stop_option(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(workspace, out, "--set", "train.epochs=3", "--set", "train.stop_after_epoch=1")) == 0
    saved = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["unlearn", "--out", str(out), "--resume", "--set", "train.lr=0.5"]) == 2
    assert "cannot change train.lr when resuming" in capsys.readouterr().err
    assert (out / "config.yaml").read_text() == saved
    assert main(["unlearn", "--out", str(out), "--resume", "--set", "train.stop_after_epoch=2"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["train"]["stop_after_epoch"] == 2
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "stopped" and run["epochs_done"] == 2


def test_a_run_started_with_relative_paths_resumes_from_another_directory(workspace, tmp_path, monkeypatch):
    model, data = workspace
    home = tmp_path / "home"
    shutil.copytree(data, home / "data")
    monkeypatch.chdir(home)
    args = _args((model, "data"), "runs/r", "--set", "train.stop_after_epoch=1")
    assert main(args) == 0
    assert yaml.safe_load((home / "runs/r/config.yaml").read_text())["data"]["source"] == str(home / "data")
    monkeypatch.chdir(tmp_path)
    assert main(["unlearn", "--out", str(home / "runs/r"), "--resume"]) == 0
    assert json.loads((home / "runs/r/run.json").read_text())["status"] == "finished"


def test_nan_stop_without_a_checkpoint_says_none_was_kept(tmp_path, tokenizer):
    from uld.data.collate import encode_records
    from uld.methods.base import MethodSpec
    from uld.ops import token_nll
    from uld.testing import tiny_llama
    from uld.train.config import make_config
    from uld.train.loop import TrainData, TrainingDiverged, train
    from uld.train.policy import FullPolicy

    def nan_loss(inputs, opts):
        return token_nll(inputs.forget_logits, inputs.forget_labels)[0].sum() * float("nan"), {}

    enc = encode_records(tokenizer, forget_records())
    cfg = make_config(method="ga", train__epochs=2, train__batch_size=2)
    policy = FullPolicy(tiny_llama(vocab_size=len(tokenizer)), needs_frozen=False)
    with pytest.raises(TrainingDiverged, match="at step 1 .*no checkpoint had been written yet"):
        train(policy, MethodSpec("nan", nan_loss), TrainData(enc, pad_id=0), cfg, tmp_path)
