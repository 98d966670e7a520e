"""A catalogue of bad inputs, faults and interrupts run against the real `uld` command.

    python tools/reliability_catalogue.py [--only SUBSTRING] [--keep DIR] [--markdown FILE]

It builds a tiny Llama, its tokenizer and the built-in synthetic TOFU-layout data in a temporary
directory, trains one small ULD run and evaluates the model once (the inputs the cases use), then
runs every case as a subprocess (the `uld` entry point), so exit codes, output, signals and
files are real. Each case is classified from what happened, not from what the code intends:

- data-loss: a file the command only reads (the model, the data, a finished run, an earlier
  evaluation) changed or vanished.
- crash: a traceback, a generic `error: SomeError: ...` line, a timeout, or exit 1 for bad input.
- silent-wrong: bad input accepted (exit 0), or a run that finished with a wrong result (the
  case's own check: a status, a stored value, weights that differ after resume).
- poor: the right exit code, but not one line, without the words that name the problem, or
  something was left behind (an output directory after a refusal).
- good: none of the above.

It prints a table of every case and the counts, and exits 1 when any case is not good. It takes
a few minutes on two CPU cores; it is a tool, not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

KINDS = ("good", "poor", "crash", "silent-wrong", "data-loss")
TIMEOUT = 300
ULD = [sys.executable, "-c", "import sys; from uld.cli import main; sys.exit(main())"]  # the `uld` entry point
GENERIC = re.compile(r"^error: [A-Z]\w*(Error|Exception)\b", re.M)
TRAIN = ["--forget", "forget01", "--retain", "retain99", "--set", "data.max_length=48",
         "--set", "train.batch_size=4", "--set", "train.epochs=3", "--set", "train.log_every=1"]
EVAL = ["--forget", "forget01", "--max-items", "4", "--max-new-tokens", "4", "--batch-size", "4"]


@dataclasses.dataclass
class Result:
    rc: int | None
    out: str
    err: str
    seconds: float
    root: Path
    sent: bool = False


@dataclasses.dataclass
class Case:
    """One command. `argv` may use the names {M} (model), {D} (data), {R} (a finished ULD run),
    {E} (an evaluation), {W} (this case's own scratch directory)."""

    name: str
    group: str
    argv: list[str]
    expect: str = "refuse"  # refuse (exit 2) | ok (exit 0) | interrupt (exit 130)
    says: tuple[str, ...] = ()  # words the message must contain (case-insensitive)
    absent: tuple[str, ...] = ("{W}/out",)  # paths that must not exist afterwards
    setup: Callable[[Path], None] | None = None  # builds inputs in {W}
    check: Callable[[Result], str | None] | None = None  # a wrong result, described; None if right
    send: tuple[Callable[[Path], bool], int] | None = None  # (when, signal) sent to the process
    cwd: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    max_file_bytes: int | None = None  # RLIMIT_FSIZE for the command: a disk that fills up


# ------------------------------------------------------------------------------ the workspace


def build_workspace(root: Path) -> None:
    """{root}/M: a tiny Llama + tokenizer; D: synthetic TOFU data; R: a finished ULD run;
    E: an evaluation of M (a reference log)."""
    from uld.testing import tiny_llama, tiny_tokenizer
    from uld.world import write_world

    tok = tiny_tokenizer()
    tiny_llama(vocab_size=len(tok)).save_pretrained(root / "M")
    tok.save_pretrained(root / "M")
    write_world(root / "D")
    for argv in (["unlearn", "--model", "{M}", "--data", "{D}", "--method", "uld", *TRAIN, "--out", "{R}"],
                 ["eval", "--model", "{M}", "--data", "{D}", *EVAL, "--out", "{E}"]):
        res = run(argv, root, root)
        if res.rc != 0:
            sys.exit(f"workspace: `uld {' '.join(argv)}` failed ({res.rc}):\n{res.err[-2000:]}")


def expand(text: str, root: Path, work: Path) -> str:
    return (text.replace("{M}", str(root / "M")).replace("{D}", str(root / "D")).replace("{R}", str(root / "R"))
            .replace("{E}", str(root / "E")).replace("{W}", str(work)))


def run(argv: list[str], root: Path, work: Path, send=None, cwd: str | None = None,
        env: dict[str, str] | None = None, max_file_bytes: int | None = None) -> Result:
    args = [*ULD, *(expand(a, root, work) for a in argv)]
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("ULD_DEBUG", None)
    t0, sent = time.time(), False
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(args, stdout=out, stderr=err, cwd=expand(cwd, root, work) if cwd else root,
                             env=full_env, start_new_session=True,
                             preexec_fn=lambda: (default_sigint(), limit_file_size(max_file_bytes)))
        try:
            if send is not None:
                when, sig = send
                while p.poll() is None and not when(work) and time.time() - t0 < TIMEOUT:
                    time.sleep(0.05)
                if p.poll() is None:
                    os.killpg(p.pid, sig) if sig == signal.SIGKILL else p.send_signal(sig)
                    sent = True
            rc = p.wait(timeout=max(1.0, TIMEOUT - (time.time() - t0)))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = None
        out.seek(0)
        err.seek(0)
        return Result(rc, out.read(), err.read(), time.time() - t0, root, sent)


def default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps it ignored: restore
    # the default, so that the command sees Ctrl-C as it would from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def limit_file_size(n: int | None) -> None:
    # Writing past RLIMIT_FSIZE fails with EFBIG (Python ignores SIGXFSZ), as a full disk fails
    # with ENOSPC: the command's own write error path runs.
    if n is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


def fingerprint(root: Path) -> dict[str, str]:
    """A hash of every file the cases may only read."""
    hashes = {}
    for name in ("M", "D", "R", "E"):
        for p in sorted((root / name).rglob("*")):
            if p.is_file():
                hashes[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return hashes


# ------------------------------------------------------------------------------ classifying


def message_lines(err: str) -> list[str]:
    """The lines of stderr that are uld's own (library warnings and progress left out)."""
    return [ln for ln in err.splitlines() if ln.strip() and not re.search(r"warn|^\s*\d+%|it/s\]|━", ln, re.I)]


def classify(case: Case, res: Result, work: Path, before: dict[str, str], after: dict[str, str]) -> tuple[str, str]:
    changed = sorted(k for k in before if before[k] != after.get(k))
    if changed:
        return "data-loss", f"changed or removed: {', '.join(changed[:3])}"
    text = res.out + res.err
    if case.send is not None and not res.sent:
        return "not-run", "the command ended before the signal was due"
    if res.rc is None:
        return "crash", f"timed out after {TIMEOUT} s"
    if "Traceback (most recent call last)" in text:
        return "crash", "traceback: " + text.strip().splitlines()[-1][:120]
    generic = GENERIC.search(res.err)
    if generic:
        return "crash", res.err[generic.start():].splitlines()[0][:140]
    lines = message_lines(res.err)
    wanted = {"refuse": 2, "ok": 0, "interrupt": 130, "killed": -signal.SIGKILL, "fail": res.rc or 1}[case.expect]
    if res.rc != wanted:
        if case.expect == "refuse" and res.rc == 0:
            return "silent-wrong", "accepted: " + (res.err.strip().splitlines() or ["(no message)"])[-1][:120]
        if case.expect == "interrupt" and res.rc == 0:
            return "silent-wrong", "exit 0 after the signal"
        return ("crash" if res.rc == 1 else "poor"), f"exit {res.rc}: " + (lines or ["(no message)"])[-1][:120]
    if case.check is not None:
        wrong = case.check(res)
        if wrong:
            return "silent-wrong", wrong
    left = [a for a in case.absent if Path(expand(a, res.root, work)).exists()]
    if case.expect in ("refuse", "interrupt") and left:
        return "poor", f"left behind: {', '.join(Path(expand(a, res.root, work)).name for a in left)}"
    if case.expect in ("refuse", "interrupt", "fail"):
        if len(lines) != 1:
            return "poor", f"{len(lines)} lines: " + " | ".join(ln[:60] for ln in lines[:3])
        missing = [w for w in case.says if w.lower() not in lines[0].lower()]
        if missing:
            return "poor", f"does not say {missing}: {lines[0][:120]}"
    return "good", (lines[-1][:120] if lines else "")


# ------------------------------------------------------------------------------ case helpers


def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        p = work / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def data_with(splits: dict[str, list | str | bytes]) -> Callable[[Path], None]:
    """{W}/data: the given split files (records as JSON lines, or raw text/bytes)."""
    def setup(work: Path) -> None:
        d = work / "data"
        d.mkdir(parents=True, exist_ok=True)
        for name, rows in splits.items():
            body = rows if isinstance(rows, (str, bytes)) else "".join(json.dumps(r) + "\n" for r in rows)
            (d / f"{name}.json").write_bytes(body if isinstance(body, bytes) else body.encode())
    return setup


def qa(n: int, prefix: str = "q") -> list[dict]:
    return [{"question": f"{prefix} question {i}?", "answer": f"answer {i}."} for i in range(n)]


def unlearn(*extra: str, data: str = "{D}", model: str = "{M}", method: str = "npo") -> list[str]:
    return ["unlearn", "--model", model, "--data", data, "--method", method, *TRAIN, *extra, "--out", "{W}/out"]


def on_set(*items: str, method: str = "npo") -> list[str]:
    return unlearn(*(x for item in items for x in ("--set", item)), method=method)


def user_data(*extra: str) -> list[str]:
    return ["unlearn", "--model", "{M}", "--data", "{W}/data", "--method", "gd", "--forget", "forget",
            "--retain", "retain", "--set", "train.epochs=1", *extra, "--out", "{W}/out"]


def small_vocab_model(work: Path) -> None:
    from uld.testing import tiny_llama, tiny_tokenizer

    tiny_llama(vocab_size=100).save_pretrained(work / "small")
    tiny_tokenizer().save_pretrained(work / "small")


def other_model(work: Path) -> None:
    from uld.testing import tiny_llama, tiny_tokenizer

    tiny_llama(vocab_size=len(tiny_tokenizer()), seed=1).save_pretrained(work / "other")
    tiny_tokenizer().save_pretrained(work / "other")


def moved_target_run(work: Path) -> None:
    """{W}/run: a copy of R whose recorded target path now holds a different model."""
    root = work.parent.parent
    shutil.copytree(root / "M", work / "target")
    cfg_path = root / "R" / "config.json"
    shutil.copytree(root / "R", work / "run")
    text = cfg_path.read_text().replace(json.dumps(str(root / "M"))[1:-1], json.dumps(str(work / "target"))[1:-1])
    (work / "run" / "config.json").write_text(text)
    from uld.testing import tiny_llama, tiny_tokenizer

    shutil.rmtree(work / "target")
    tiny_llama(vocab_size=len(tiny_tokenizer()), seed=2).save_pretrained(work / "target")
    tiny_tokenizer().save_pretrained(work / "target")


def reference_with_nan(work: Path) -> None:
    root = work.parent.parent
    shutil.copytree(root / "E", work / "ref")
    p = work / "ref" / "TOFU_EVAL.json"
    log = json.loads(p.read_text())

    def poison(x):
        if isinstance(x, dict):
            return {k: poison(v) for k, v in x.items()}
        if isinstance(x, list):
            return [poison(v) for v in x]
        return float("nan") if isinstance(x, float) else x
    p.write_text(json.dumps(poison(log)))


def unavailable_says(slug: str, metric: str, word: str) -> Callable[[Result], str | None]:
    """The metric is missing from the summary and TOFU_UNAVAILABLE.json gives a reason with `word`."""
    def check(res: Result) -> str | None:
        out = res.root / "cases" / slug / "out"
        summary = json.loads((out / "TOFU_SUMMARY.json").read_text())
        reason = json.loads((out / "TOFU_UNAVAILABLE.json").read_text()).get(metric, "")
        if metric in summary or word.lower() not in reason.lower():
            return f"{metric}: {summary.get(metric)!r}, reason {reason[:80]!r}"
        return None
    return check


def exists(rel: str) -> Callable[[Path], bool]:
    return lambda work: (work / rel).exists()


def run_status(rel: str, want: str) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        work = Path(res.root) / "cases" / rel
        p = work / "out" / "run.json"
        status = json.loads(p.read_text()).get("status") if p.is_file() else None
        return None if status == want else f"run.json status {status!r}, expected {want!r}"
    return check


def same_weights_as_r(rel: str) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        from safetensors.torch import load_file

        work = Path(res.root) / "cases" / rel
        mine = sorted((work / "out").rglob("*.safetensors"))
        ref = {p.relative_to(res.root / "R"): p for p in (res.root / "R").rglob("*.safetensors")}
        if not mine or len(mine) != len(ref):
            return f"{len(mine)} weight files, the uninterrupted run has {len(ref)}"
        for p in mine:
            a, b = load_file(p), load_file(ref[p.relative_to(work / "out")])
            if a.keys() != b.keys() or any(not a[k].equal(b[k]) for k in a):
                return f"{p.name} differs from the uninterrupted run"
        return None
    return check


# ------------------------------------------------------------------------------ the cases


def cases() -> list[Case]:
    bad_utf8 = b'{"question": "caf\xe9?", "answer": "yes."}\n'
    line57 = "".join(json.dumps(r) + "\n" for r in qa(56)) + '{"question": "x", "answer": }\n'
    c = [
        # --- the command line
        Case("unknown command", "usage", ["unlearnn"], says=("unlearnn",)),
        Case("unknown option", "usage", ["unlearn", "--bogus", "1"], says=("--bogus",)),
        Case("wrong type", "usage", ["generate", "--model", "{M}", "--prompt", "x", "--max-new-tokens", "many"], says=("many",)),
        Case("missing option", "usage", ["eval", "--model", "{M}"], says=("--data",)),
        # --- uld unlearn: every option checked before the run directory exists
        Case("K out of range", "validation", on_set("policy.num_layers=99", method="uld"), says=("num_layers",)),
        Case("lora_rank=-1", "validation", on_set("policy.lora_rank=-1", method="uld"), says=("lora_rank",)),
        Case("batch not a multiple of micro-batch", "validation", on_set("train.batch_size=6", "train.micro_batch_size=4"), says=("micro_batch",)),
        Case("loss.beta=abc", "validation", on_set("loss.beta=abc"), says=("loss.beta", "abc")),
        Case("RMU layer out of range", "validation", on_set("loss.layer=99", method="rmu"), says=("loss.layer",)),
        Case("lr=nan", "validation", on_set("train.lr=nan"), says=("train.lr",)),
        Case("lr=inf", "validation", on_set("train.lr=inf"), says=("train.lr",)),
        Case("lr=0", "validation", on_set("train.lr=0"), says=("train.lr",)),
        Case("filter_rate=5", "validation", on_set("policy.filter_rate=5", method="uld"), says=("filter_rate",)),
        Case("assistant_weight=-2", "validation", on_set("policy.assistant_weight=-2", method="uld"), says=("assistant_weight",)),
        Case("renamed policy.alpha", "validation", on_set("policy.alpha=-2", method="uld"), says=("assistant_weight",)),
        Case("unknown method", "validation", unlearn(method="npo2"), says=("npo2", "did you mean")),
        Case("unknown option with a typo", "validation", on_set("train.lrr=1e-4"), says=("train.lrr", "train.lr")),
        Case("unknown method option", "validation", on_set("loss.betta=2"), says=("loss.betta",)),
        Case("epochs=0", "validation", on_set("train.epochs=0"), says=("epochs",)),
        Case("seed=-1", "validation", on_set("seed=-1"), says=("seed",)),
        Case("warmup_ratio=1.5", "validation", on_set("train.warmup_ratio=1.5"), says=("warmup_ratio",)),
        Case("data.max_length=1", "validation", on_set("data.max_length=1"), says=("max_length",)),
        Case("vocabulary smaller than the tokenizer", "validation", unlearn(model="{W}/small"), setup=small_vocab_model, says=("vocab",)),
        Case("model that does not exist", "validation", unlearn(model="{W}/nope"), says=("nope",)),
        Case("data directory that does not exist", "validation", unlearn(data="{W}/nope"), says=("nope",)),
        Case("missing split", "validation", unlearn("--forget", "forget99"), says=("forget99",)),
        Case("split name with a path", "validation", unlearn("--forget", "../x"), says=("../x",)),
        Case("forget and retain the same split", "validation", unlearn("--retain", "forget01", method="gd"), says=("same",)),
        Case("forget and retain overlap", "validation", user_data(), setup=data_with({"forget": qa(4), "retain": qa(8)}), says=("forget",)),
        Case("a field that is a list", "validation", user_data(), says=("answer",),
             setup=data_with({"forget": [{"question": "a?", "answer": ["x"]}], "retain": qa(4, "r")})),
        Case("a field that is a number", "validation", user_data(), says=("question",),
             setup=data_with({"forget": [{"question": 5, "answer": "x"}], "retain": qa(4, "r")})),
        Case("an empty answer", "validation", user_data(), says=("answer",),
             setup=data_with({"forget": [{"question": "a?", "answer": ""}], "retain": qa(4, "r")})),
        Case("a non-UTF-8 data file", "validation", user_data(), says=("utf-8", "forget.json"),
             setup=data_with({"forget": bad_utf8, "retain": qa(4, "r")})),
        Case("a JSON error on line 57", "validation", user_data(), says=("line 57",),
             setup=data_with({"forget": qa(2, "f"), "retain": line57})),
        Case("an empty forget split", "validation", user_data(), says=("forget",),
             setup=data_with({"forget": "", "retain": qa(4, "r")})),
        Case("--out is a file", "validation", unlearn(), setup=write("out", "x"), says=("file",), absent=()),
        Case("--out under a file", "validation", [*unlearn()[:-1], "{W}/f/out"], setup=write("f", "x"), says=("file",), absent=()),
        Case("missing --config file", "validation", unlearn("--config", "{W}/nope.yaml"), says=("nope.yaml",)),
        Case("--config that is not YAML", "validation", unlearn("--config", "{W}/c.yaml"), setup=write("c.yaml", "a: [1,\n"), says=("c.yaml",)),
        Case("--resume on a directory that is not a run", "validation",
             ["unlearn", "--out", "{W}/out", "--resume"], setup=write("out/x.txt", "x"), says=("run",), absent=()),
        Case("--resume on a finished run", "validation",
             ["unlearn", "--out", "{R}", "--resume"], says=("finished",), absent=()),
        # --- no input destroyed
        Case("eval --out on its own --reference", "data-loss",
             ["eval", "--model", "{M}", "--data", "{D}", *EVAL, "--reference", "{E}", "--out", "{E}"], says=("reference",), absent=()),
        # Writing result files into the model's directory replaces no file of the model: allowed.
        Case("eval --out on its own model (adds files, replaces none)", "data-loss",
             ["eval", "--model", "{M}", "--data", "{D}", *EVAL, "--out", "{M}"], expect="ok", absent=()),
        Case("unlearn --out on its data", "data-loss", [*unlearn()[:-1], "{D}"], says=("exists",), absent=()),
        Case("unlearn --out on a finished run", "data-loss", [*unlearn()[:-1], "{R}"], says=("exists",), absent=()),
        Case("bench all --out on its model", "data-loss", ["bench", "all", "--model", "{M}", "--out", "{M}"], says=("model",), absent=()),
        Case("augment --out on a data file", "data-loss",
             ["augment", "--model", "{M}", "--data", "{D}", "--split", "forget01", "--out", "{D}/forget01.json"], says=("forget01",), absent=()),
        Case("export onto its own run", "data-loss", ["export", "{R}", "{R}"], says=("exist",), absent=()),
        Case("export onto the model", "data-loss", ["export", "{R}", "{M}"], says=("exist",), absent=()),
        # --- uld eval / generate / serve / augment: refused before the model loads
        Case("generate --max-new-tokens 0", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--max-new-tokens", "0"], says=("--max-new-tokens",)),
        Case("generate --device cuda:7", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--device", "cuda:7"], says=("cuda:7",)),
        Case("generate --device gpu", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--device", "gpu"], says=("gpu",)),
        Case("generate --temperature nan", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--sample", "--temperature", "nan"], says=("--temperature",)),
        Case("generate --temperature -1", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--sample", "--temperature", "-1"], says=("--temperature",)),
        Case("generate --top-p 2", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--sample", "--top-p", "2"], says=("--top-p",)),
        Case("generate --top-k without --sample", "eval-generate", ["generate", "--model", "{M}", "--prompt", "x", "--top-k", "3"], says=("--sample",)),
        Case("generate a model that does not exist", "eval-generate", ["generate", "--model", "{W}/nope", "--prompt", "x"], says=("nope",)),
        Case("generate --filter-rate 5 on a ULD run", "eval-generate", ["generate", "--model", "{R}", "--prompt", "x", "--filter-rate", "5"], says=("--filter-rate",)),
        Case("generate: the run's target replaced", "eval-generate", ["generate", "--model", "{W}/run", "--prompt", "x"],
             setup=moved_target_run, says=("target",)),
        Case("generate --target a different model", "eval-generate", ["generate", "--model", "{R}", "--target", "{W}/other", "--prompt", "x"],
             setup=other_model, says=("target",)),
        Case("generate a prompt longer than the context", "eval-generate",
             ["generate", "--model", "{M}", "--prompt", "word " * 400, "--max-new-tokens", "2"], says=("context",)),
        Case("eval --max-new-tokens 0", "eval-generate", ["eval", "--model", "{M}", "--data", "{D}", "--max-new-tokens", "0", "--out", "{W}/out"], says=("--max-new-tokens",)),
        Case("eval --device cuda:7", "eval-generate", ["eval", "--model", "{M}", "--data", "{D}", "--device", "cuda:7", "--out", "{W}/out"], says=("cuda:7",)),
        Case("eval a missing forget split", "eval-generate", ["eval", "--model", "{M}", "--data", "{D}", "--forget", "forget99", "--out", "{W}/out"], says=("forget99",)),
        Case("eval --metrics bogus", "eval-generate", ["eval", "--model", "{M}", "--data", "{D}", "--metrics", "bogus", "--out", "{W}/out"], says=("bogus",)),
        Case("eval --reference that does not exist", "eval-generate", ["eval", "--model", "{M}", "--data", "{D}", "--reference", "{W}/nope", "--out", "{W}/out"], says=("nope",)),
        Case("eval --reference whose values are NaN", "eval-generate",
             ["eval", "--model", "{M}", "--data", "{D}", *EVAL, "--reference", "{W}/ref", "--out", "{W}/out"], setup=reference_with_nan,
             expect="ok", absent=(), check=unavailable_says("eval-reference-whose-values-are-nan", "forget_quality", "nan")),
        Case("eval --max-length 5", "eval-generate", ["eval", "--model", "{M}", "--data", "{D}", *EVAL, "--max-length", "5", "--out", "{W}/out"], says=("max-length",)),
        Case("augment --temperature nan", "eval-generate", ["augment", "--model", "{M}", "--data", "{D}", "--split", "forget01", "--temperature", "nan", "--out", "{W}/out.jsonl"],
             says=("--temperature",), absent=("{W}/out.jsonl",)),
        Case("augment --num-paraphrases -1", "eval-generate", ["augment", "--model", "{M}", "--data", "{D}", "--split", "forget01", "--num-paraphrases", "-1", "--out", "{W}/out.jsonl"],
             says=("--num-paraphrases",), absent=("{W}/out.jsonl",)),
        Case("serve --device gpu", "eval-generate", ["serve", "--model", "{M}", "--device", "gpu"], says=("gpu",)),
        Case("serve on 0.0.0.0 without a key", "eval-generate", ["serve", "--model", "{M}", "--host", "0.0.0.0"], says=("api key",)),
        Case("the disk fills up while eval writes its results", "messages",
             ["eval", "--model", "{M}", "--data", "{D}", *EVAL, "--out", "{W}/out"], expect="fail", absent=(),
             max_file_bytes=8_000, says=("nothing was written",), check=no_temporary_files("disk-full")),
        Case("aggregate a file that is not JSON", "eval-generate", ["aggregate", "{W}/log.json"], setup=write("log.json", "{nope"), says=("log.json",)),
    ]
    return c


def interrupt_cases() -> list[Case]:
    """Signals, locks and resume. They run in this order and use each other's run directories
    (`{W}/../NAME` is the directory of the case whose slug is NAME)."""
    same_as_r = ["unlearn", "--model", "{M}", "--data", "{D}", "--method", "uld", *TRAIN, "--out", "{W}/out"]
    relative = ["unlearn", "--model", "M", "--data", "D", "--method", "uld", *TRAIN,
                "--set", "train.stop_after_epoch=1", "--out", "{W}/out"]
    resume_all = ["--set", "train.stop_after_epoch=null"]
    return [
        Case("Ctrl-C during unlearn", "interrupt", same_as_r, expect="interrupt", says=("resume",), absent=(),
             send=(exists("out/checkpoints/epoch-1"), signal.SIGINT), check=run_status("sigint", "interrupted")),
        Case("resume after Ctrl-C gives the weights of an uninterrupted run", "interrupt",
             ["unlearn", "--out", "{W}/../sigint/out", "--resume"], expect="ok", absent=(), check=same_weights_as_r("sigint")),
        Case("SIGKILL during unlearn", "interrupt", same_as_r, expect="killed", absent=(),
             send=(exists("out/checkpoints/epoch-1"), signal.SIGKILL)),
        Case("resume after SIGKILL (a stale lock) gives the same weights", "interrupt",
             ["unlearn", "--out", "{W}/../sigkill/out", "--resume"], expect="ok", absent=(), check=same_weights_as_r("sigkill")),
        Case("a second run on the --out of a running one", "concurrency", same_as_r, says=("another",), absent=(),
             setup=start_background([*same_as_r[:-2], "--set", "train.epochs=12", "--out", "{W}/out"])),
        Case("--resume on a run that is still training", "concurrency", ["unlearn", "--out", "{W}/../concurrent/out", "--resume"],
             says=("another",), absent=(), check=background_finished("concurrent")),
        Case("stop after epoch 1 (relative paths): checkpoint tensors are safetensors", "checkpoint", relative,
             expect="ok", absent=(), check=checkpoint_is_safetensors("stop")),
        Case("--resume with a new train.lr", "resume", ["unlearn", "--out", "{W}/../stop/out", "--resume", *resume_all,
             "--set", "train.lr=0.5"], says=("train.lr",), absent=()),
        Case("resume from another working directory", "resume", ["unlearn", "--out", "{W}/../stop/out", "--resume", *resume_all],
             expect="ok", absent=(), cwd="/", check=same_weights_as_r("stop")),
        Case("Ctrl-C during eval", "interrupt", ["eval", "--model", "{M}", "--data", "{D}", "--forget", "forget01",
             "--max-new-tokens", "4", "--out", "{W}/out"], expect="interrupt",
             absent=("{W}/out/TOFU_EVAL.json", "{W}/out/TOFU_SUMMARY.json"), send=(after_seconds(7), signal.SIGINT)),
        Case("loss.beta=1e-1 is the number 0.1 and trains", "validation", on_set("loss.beta=1e-1", "train.epochs=1"),
             expect="ok", absent=(), check=stored_option("beta-number", ("loss", "beta"), 0.1)),
        Case("a diverging run (lr=1e6) says what is kept", "messages", on_set("train.lr=1e6", "train.max_grad_norm=0"),
             expect="fail", absent=(), check=no_false_checkpoint_claim("diverge")),
    ]


BACKGROUND: dict[str, subprocess.Popen] = {}


def start_background(argv: list[str]) -> Callable[[Path], None]:
    """Start `uld argv` in the background and wait until it trains (holds the lock)."""
    def setup(work: Path) -> None:
        root = work.parent.parent
        args = [*ULD, *(expand(a, root, work) for a in argv)]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
                             preexec_fn=default_sigint)
        BACKGROUND[work.name] = p
        t0 = time.time()
        while not (work / "out" / "metrics.jsonl").is_file() and p.poll() is None and time.time() - t0 < TIMEOUT:
            time.sleep(0.1)
    return setup


def background_finished(slug: str) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        p = BACKGROUND.pop(slug)
        rc = p.wait(timeout=TIMEOUT)
        status = json.loads((res.root / "cases" / slug / "out" / "run.json").read_text()).get("status")
        return None if rc == 0 and status == "finished" else f"the first run ended with exit {rc}, status {status!r}"
    return check


def after_seconds(n: float) -> Callable[[Path], bool]:
    t0: list[float] = []

    def when(work: Path) -> bool:
        t0.append(time.time())
        return time.time() - t0[0] >= n
    return when


def checkpoint_is_safetensors(slug: str) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        out = res.root / "cases" / slug / "out"
        status = json.loads((out / "run.json").read_text()).get("status")
        tensors = list((out / "checkpoints").rglob("*.safetensors"))
        if status != "stopped" or not tensors:
            return f"status {status!r}, {len(tensors)} safetensors files in the checkpoint"
        return None
    return check


def no_temporary_files(slug: str) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        left = [p.name for p in (res.root / "cases" / slug).rglob("*") if p.is_file() and "tmp" in p.name]
        return f"temporary files left: {left[:3]}" if left else None
    return check


def stored_option(slug: str, key: tuple[str, ...], want: float) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        import yaml

        value = yaml.safe_load((res.root / "cases" / slug / "out" / "config.yaml").read_text())
        for k in key:
            value = value.get(k) if isinstance(value, dict) else None
        ok = isinstance(value, float) and value == want
        return None if ok else f"config.yaml holds {'.'.join(key)} = {value!r}, expected {want!r}"
    return check


def no_false_checkpoint_claim(slug: str) -> Callable[[Result], str | None]:
    def check(res: Result) -> str | None:
        out = res.root / "cases" / slug / "out"
        has = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
        if "checkpoint is kept" in res.err and not has:
            return "says the last good checkpoint is kept, and there is none"
        return None
    return check


# ------------------------------------------------------------------------------ running


def run_all(root: Path, only: str | None) -> list[tuple[Case, str, str, float]]:
    rows = []
    cases_dir = root / "cases"
    every = cases() + interrupt_cases()
    for i, case in enumerate(every):
        if only and only.lower() not in case.name.lower():
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", case.name.lower()).strip("-")[:40]
        work = cases_dir / SLUGS.get(case.name, slug)
        work.mkdir(parents=True, exist_ok=True)
        if case.setup:
            case.setup(work)
        before = fingerprint(root)
        res = run(case.argv, root, work, send=case.send, cwd=case.cwd, env=case.env, max_file_bytes=case.max_file_bytes)
        after = fingerprint(root)
        kind, why = classify(case, res, work, before, after)
        rows.append((case, kind, why, res.seconds))
        print(f"{i + 1:3d} {kind:12s} {res.seconds:5.1f}s  {case.name}: {why}", flush=True)
    return rows


SLUGS = {  # cases that later cases refer to by directory
    "Ctrl-C during unlearn": "sigint",
    "SIGKILL during unlearn": "sigkill",
    "a second run on the --out of a running one": "concurrent",
    "stop after epoch 1 (relative paths): checkpoint tensors are safetensors": "stop",
    "a diverging run (lr=1e6) says what is kept": "diverge",
    "loss.beta=1e-1 is the number 0.1 and trains": "beta-number",
    "the disk fills up while eval writes its results": "disk-full",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run only the cases whose name contains this")
    ap.add_argument("--keep", type=Path, help="build the workspace here and keep it (reused when it exists)")
    ap.add_argument("--markdown", type=Path, help="also write the table as markdown to this file")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="uld-catalogue-"))
    root = root.resolve()
    t0 = time.time()
    if not (root / "E").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        print(f"building the workspace in {root} ...", flush=True)
        build_workspace(root)
    shutil.rmtree(root / "cases", ignore_errors=True)
    try:
        rows = run_all(root, args.only)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    counts = {k: sum(1 for _, kind, _, _ in rows if kind == k) for k in (*KINDS, "not-run")}
    table = ["| # | group | case | result | what happened |", "|---|---|---|---|---|"]
    table += [f"| {i + 1} | {c.group} | {c.name} | {kind} | {why.replace('|', '/')} |" for i, (c, kind, why, _) in enumerate(rows)]
    shown = [k for k in (*KINDS, "not-run") if k in KINDS or counts[k]]
    summary = f"{len(rows)} cases: " + ", ".join(f"{counts[k]} {k}" for k in shown) + f" ({time.time() - t0:.0f} s)"
    print("\n" + "\n".join(table) + "\n\n" + summary)
    if args.markdown:
        args.markdown.write_text("\n".join(table) + "\n\n" + summary + "\n", encoding="utf-8")
    return 0 if counts["good"] == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
