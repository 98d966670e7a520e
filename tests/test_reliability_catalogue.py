"""The reliability catalogue's classifier (tools/reliability_catalogue.py), on made-up results.

The catalogue itself runs the real CLI for minutes and is not part of the suite; this checks
that each outcome lands in the class the catalogue's docstring defines.
"""

import importlib.util
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reliability_catalogue", ROOT / "tools" / "reliability_catalogue.py")
cat = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = cat  # dataclasses look their module up there
spec.loader.exec_module(cat)


def _classify(tmp_path, case, rc, err="", out="", before=None, after=None, sent=False):
    res = cat.Result(rc, out, err, 0.1, tmp_path, sent)
    return cat.classify(case, res, tmp_path, before or {}, after or {})[0]


@pytest.mark.parametrize("rc, err, kind", [
    (2, "error: option train.lr must be > 0, got 0\n", "good"),
    (2, "error: something else entirely\n", "poor"),  # does not name train.lr
    (2, "error: option train.lr must be > 0\nsecond line\n", "poor"),
    (1, "error: ValueError: temperature has to be positive (set ULD_DEBUG=1 for the traceback)\n", "crash"),
    (1, "Traceback (most recent call last):\n  ...\nValueError: x\n", "crash"),
    (None, "", "crash"),  # timed out
    (0, "done\n", "silent-wrong"),
    (3, "error: option train.lr odd\n", "poor"),
])
def test_a_refusal_is_classified_by_exit_code_and_message(tmp_path, rc, err, kind):
    case = cat.Case("x", "g", [], says=("train.lr",), absent=())
    assert _classify(tmp_path, case, rc, err) == kind


def test_changed_inputs_are_data_loss_and_leftovers_are_poor(tmp_path):
    case = cat.Case("x", "g", [], absent=("{W}/out",))
    assert _classify(tmp_path, case, 2, "error: no\n", before={"D/a": "1"}, after={"D/a": "2"}) == "data-loss"
    assert _classify(tmp_path, case, 2, "error: no\n", before={"D/a": "1"}, after={}) == "data-loss"
    (tmp_path / "out").mkdir()
    assert _classify(tmp_path, case, 2, "error: no\n") == "poor"


def test_a_wrong_result_of_a_successful_run_is_silent_wrong(tmp_path):
    case = cat.Case("x", "g", [], expect="ok", absent=(), check=lambda res: "weights differ")
    assert _classify(tmp_path, case, 0) == "silent-wrong"
    assert _classify(tmp_path, cat.Case("x", "g", [], expect="ok", absent=()), 0) == "good"


def test_signals(tmp_path):
    sigint = cat.Case("x", "g", [], expect="interrupt", absent=(), send=(lambda w: True, signal.SIGINT))
    assert _classify(tmp_path, sigint, 130, "interrupted; resume with it\n", sent=True) == "good"
    assert _classify(tmp_path, sigint, 130, "interrupted; resume\ninterrupted\n", sent=True) == "poor"
    assert _classify(tmp_path, sigint, 0, "", sent=True) == "silent-wrong"
    assert _classify(tmp_path, sigint, 0, "", sent=False) == "not-run"  # ended before the signal
    kill = cat.Case("x", "g", [], expect="killed", absent=(), send=(lambda w: True, signal.SIGKILL))
    assert _classify(tmp_path, kill, -signal.SIGKILL, "", sent=True) == "good"


def test_the_catalogue_has_at_least_60_cases_covering_every_group():
    every = cat.cases() + cat.interrupt_cases()
    assert len(every) >= 60 and len({c.name for c in every}) == len(every)
    assert {"usage", "validation", "data-loss", "eval-generate", "interrupt", "concurrency", "resume",
            "checkpoint", "messages"} <= {c.group for c in every}
