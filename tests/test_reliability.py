"""What the CLI promises under bad input, interrupts and failing disks (docs/reliability.md).

Every case: the exit code (2 bad input, 130 interrupted, 1 environment), one sentence naming the
file / option / value, and nothing created or changed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from uld.cli import main
from uld.data.records import load_split
from uld.errors import UldError
from uld.io import atomic_write_text, check_out, read_json, read_json_lines


def _writes_fail(monkeypatch, error: OSError) -> None:
    """Every write() to a file that uld.io opens raises `error` (the file is still closed)."""
    import uld.io

    real_fdopen = os.fdopen

    class Failing:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, _):
            raise error

    monkeypatch.setattr(uld.io.os, "fdopen", lambda fd, *a, **k: Failing(real_fdopen(fd, *a, **k)))


def _lines(text: str) -> list[str]:
    return [ln for ln in text.strip().splitlines() if ln.strip()]


# ----------------------------------------------------------------------------- interrupts


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_ctrl_c_exits_130_with_one_line():
    """A real SIGINT inside a command: Python raises KeyboardInterrupt, typer turns it into 130,
    and the entry point must pass that on (it used to return 0)."""
    proc = _run_python("""
        import os, signal, sys
        from uld.cli import main
        from uld.cli.app import app

        @app.command("nap")
        def nap():
            os.kill(os.getpid(), signal.SIGINT)

        sys.exit(main(["nap"]))
    """)
    assert proc.returncode == 130
    assert _lines(proc.stderr) == ["interrupted"]
    assert signal.SIGINT == 2  # 130 = 128 + SIGINT


def test_interrupted_error_message_is_printed_and_exits_130():
    proc = _run_python("""
        import sys
        from uld.cli import main
        from uld.cli.app import app
        from uld.errors import Interrupted

        @app.command("nap")
        def nap():
            raise Interrupted("interrupted; resume with `uld unlearn --out run --resume`")

        sys.exit(main(["nap"]))
    """)
    assert proc.returncode == 130
    assert _lines(proc.stderr) == ["interrupted; resume with `uld unlearn --out run --resume`"]


def test_typer_exit_codes_pass_through():
    proc = _run_python("""
        import sys, typer
        from uld.cli import main
        from uld.cli.app import app

        @app.command("three")
        def three():
            raise typer.Exit(3)

        sys.exit(main(["three"]))
    """)
    assert proc.returncode == 3


# ----------------------------------------------------------------------------- bad input files


def _tofu_like(tmp_path, **override):
    """A data dir with a forget10 split (2 records) and any override text per split."""
    d = tmp_path / "data"
    d.mkdir()
    rows = [{"question": "Who?", "answer": "Ann."}, {"question": "Where?", "answer": "Lima."}]
    (d / "forget10.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, text in override.items():
        (d / f"{name}.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    return d


def test_json_lines_error_names_the_real_line(tmp_path):
    d = _tofu_like(tmp_path, bad='{"question": "a", "answer": "b"}\n\n{"question": "c", "answer": "d"}\n{"question": oops}\n')
    with pytest.raises(UldError, match=r"bad.json is not valid JSON lines \(line 4, column 14"):
        load_split(d, "bad")


def test_json_array_error_names_the_real_line(tmp_path):
    d = _tofu_like(tmp_path, bad='[\n  {"question": "a", "answer": "b"},\n  {"question": "c" "answer": "d"}\n]\n')
    with pytest.raises(UldError, match=r"bad.json is not valid JSON \(line 3, column"):
        load_split(d, "bad")


def test_read_json_reports_line_and_column(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{\n "a": 1,\n "b": ,\n}')
    with pytest.raises(UldError, match=r"x.json is not valid JSON \(line 3, column 7"):
        read_json(p)
    p.write_text('{"a": 1}\n\n[1, 2\n')
    with pytest.raises(UldError, match=r"line 3, column 6"):
        read_json_lines(p)


def test_non_utf8_byte_is_one_sentence_with_the_file_name(tmp_path):
    d = _tofu_like(tmp_path, latin='{"question": "a", "answer": "b"}\n{"question": "caf\xe9", "answer": "x"}\n'.encode("latin-1"))
    with pytest.raises(UldError, match=r"latin.json is not UTF-8 text \(line 2, byte 50: b'\\xe9'\); save it as UTF-8"):
        load_split(d, "latin")


def test_non_utf8_through_the_cli_exits_2_and_creates_nothing(tmp_path, capsys):
    d = _tofu_like(tmp_path, forget10_perturbed=b'{"question": "\xff", "answer": "b"}\n')
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tmp_path / "no-model"), "--data", str(d), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert _lines(err) == [f"error: {d / 'forget10_perturbed.json'} is not UTF-8 text (line 1, byte 14: b'\\xff'); save it as UTF-8"]
    assert not out.exists()


@pytest.mark.parametrize("field, value, kind", [
    ("answer", ["Ann", "Bob"], "a list"),
    ("answer", 1945, "a number"),
    ("question", "   ", "an empty string"),
    ("answer", "   ", "an empty string"),
    ("paraphrased_answer", {"text": "x"}, "an object"),
    ("answer", True, "a boolean"),
])
def test_records_with_non_text_fields_are_refused(tmp_path, field, value, kind):
    """No silent `str()`: a list answer used to become "['Ann', 'Bob']"."""
    rec = {"question": "Who?", "answer": "Ann.", field: value}
    d = _tofu_like(tmp_path, bad=json.dumps({"question": "ok?", "answer": "ok."}) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(UldError, match=rf"record 1 of .*bad.json: field '{field}' must be a non-empty string, got {kind}"):
        load_split(d, "bad")


@pytest.mark.parametrize("value", [[1, 2], ["ok", ""], 7, [["nested"]]])
def test_perturbed_answers_must_be_strings(tmp_path, value):
    rec = {"question": "Who?", "answer": "Ann.", "perturbed_answer": value}
    d = _tofu_like(tmp_path, bad=json.dumps(rec) + "\n")
    with pytest.raises(UldError, match=r"field 'perturbed_answer' must be a non-empty string or a list of them"):
        load_split(d, "bad")


def test_records_that_are_not_objects_are_refused(tmp_path):
    d = _tofu_like(tmp_path, bad='{"question": "a", "answer": "b"}\n["a", "b"]\n')
    with pytest.raises(UldError, match=r"record 1 of .*bad.json is list .* must be a JSON object"):
        load_split(d, "bad")


@pytest.mark.parametrize("split", ["../forget10", "sub/forget10", "/etc/passwd", "..", ".", "a\\b", ""])
def test_split_names_with_a_path_are_refused(tmp_path, split):
    """`--forget ../x` used to read a file outside --data."""
    d = _tofu_like(tmp_path)
    (tmp_path / "forget10.json").write_text((d / "forget10.json").read_text())  # a real file one level up
    with pytest.raises(UldError, match="must be a plain name"):
        load_split(d / "..", split) if split == "" else load_split(d, split)


# ----------------------------------------------------------------------------- outputs


def test_output_that_would_replace_an_input_is_refused(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "TOFU_EVAL.json").write_text("{}")
    with pytest.raises(UldError, match=r"--out '.*ref' is the input --reference '.*ref'; writing it would destroy"):
        check_out(ref, {"--reference": ref})
    with pytest.raises(UldError, match="contains the input --data"):
        check_out(tmp_path, {"--data": ref / "TOFU_EVAL.json"})
    # The same directory named differently (a trailing "/.", a symlink) is the same input.
    (tmp_path / "link").symlink_to(ref)
    with pytest.raises(UldError, match="is the input"):
        check_out(tmp_path / "link", {"--reference": f"{ref}/."})
    # Writing next to or inside an input is fine; hub ids and absent inputs are skipped.
    assert check_out(ref / "eval", {"--reference": ref, "--model": "org/model", "--x": None}) == ref / "eval"
    assert (ref / "TOFU_EVAL.json").read_text() == "{}"


def test_output_on_a_file_is_refused(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep")
    with pytest.raises(UldError, match="is a file; give a directory"):
        check_out(f)
    with pytest.raises(UldError, match=r"cannot be created: '.*file' is a file"):
        check_out(f / "sub")
    with pytest.raises(UldError, match="is a directory; give a file name"):
        check_out(tmp_path, kind="file")
    assert f.read_text() == "keep"


def test_bench_out_on_its_own_model_is_refused(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert main(["bench", "all", "--out", str(model), "--model", str(model)]) == 2
    assert "is the input --model" in capsys.readouterr().err
    assert (model / "config.json").read_text() == "{}"


def test_a_full_disk_is_one_sentence_and_leaves_no_temp_file(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing: the old file stays, the temp file goes, and the CLI prints one line."""
    target = tmp_path / "results.json"
    target.write_text("old")
    _writes_fail(monkeypatch, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)))
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]

    from uld.cli.app import app

    @app.command("write-something")
    def write_something():
        atomic_write_text(target, "new")

    try:
        assert main(["write-something"]) == 1
    finally:
        app.registered_commands.pop()
    assert _lines(capsys.readouterr().err) == [f"error: no space left on device ({target}); nothing was written"]
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_write_error_without_a_file_name_names_the_result_file(tmp_path, monkeypatch):
    """A real failed write() (here EFBIG, a file-size limit) carries no file name; the message
    used to be a bare "File too large"."""
    from uld.io import describe_os_error

    target = tmp_path / "results.json"
    _writes_fail(monkeypatch, OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
    with pytest.raises(OSError) as e:
        atomic_write_text(target, "new")
    assert describe_os_error(e.value) == f"file too large ({target})" and list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv, message", [
    (["eval", "--bogus"], "error: No such option: --bogus"),
    (["nosuch"], "error: No such command 'nosuch' (see `uld --help`)"),
    (["eval", "--model", "m", "--data", "d", "--out", "o", "--batch-size", "abc"], "error: Invalid value for '--batch-size'"),
    (["generate", "--model", "m", "--prompt", "x", "--max-new-tokens=many"], "error: Invalid value for '--max-new-tokens'"),
    (["eval", "--model", "m"], "error: Missing option '--data'"),
    (["bench"], "error: Missing argument 'which' (see `uld bench --help`)"),
    (["unlearn", "--out", "o", "--set"], "error: Option '--set' requires an argument (see `uld unlearn --help`)"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    """A bad command line used to print `error: NoSuchOption: ...` and exit 1 (typer ships its
    own copy of click's exceptions, which the entry point did not recognise)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = _lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith(message) and err[0].endswith("--help`)")
    assert list(tmp_path.iterdir()) == []
    if message.startswith("error: Invalid value"):  # the refused value is named
        assert ("got 'abc'" in err[0]) or ("got 'many'" in err[0])


# ----------------------------------------------------------------------------- reproducibility


def test_pinning_cpu_kernels_acts_only_before_torch_loads():
    proc = _run_python("""
        import os, sys
        os.environ.pop("MKL_CBWR", None); os.environ["ATEN_CPU_CAPABILITY"] = "default"
        from uld.repro import pin_cpu_kernels
        first = pin_cpu_kernels()
        import torch
        print(first, pin_cpu_kernels(), os.environ["MKL_CBWR"], os.environ["ATEN_CPU_CAPABILITY"])
    """)
    # The user's own value wins (ATEN_CPU_CAPABILITY=default); a pin after `import torch` is too late.
    assert proc.stdout.split() == ["True", "False", "AVX2", "default"]


def test_machine_info_records_what_decides_the_bits():
    from uld.repro import machine_info

    info = machine_info()
    assert info["torch_threads"] >= 1 and info["aten_cpu_capability"]
    assert {"cpu", "isa", "env", "kernels_pinned", "deterministic_algorithms"} <= set(info)
    json.dumps(info)  # goes into results.json as it is


@pytest.mark.parametrize("device, message", [
    ("gpu", "is not a torch device"),
    ("cuda:7", "cuda"),
    ("meta", "is not available here"),
])
def test_bad_devices_are_one_sentence(device, message):
    """`--device cuda:7` used to be an AssertionError deep inside torch, after the model loaded."""
    import torch

    from uld.device import resolve_device

    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(UldError, match=message):
        resolve_device(device)
    assert resolve_device("cpu") == "cpu" and resolve_device(None) in ("cpu", "cuda")
