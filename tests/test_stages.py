"""A study's cached stage: built once with its record, reused after, rebuilt when interrupted."""

import json

import pytest

from uld.studies.stages import STAGE_FILE, cached_stage, is_finished


def test_a_stage_is_built_once_and_reused_with_its_record(tmp_path):
    calls, logs = [], []

    def body(tmp):
        calls.append(tmp)
        (tmp / "model.txt").write_text("weights")
        return {"records": 3}

    record, reused = cached_stage(tmp_path / "target", "target", body, logs.append, "study")
    assert not reused and record["stage"] == "target" and record["records"] == 3 and record["seconds"] >= 0
    assert (tmp_path / "target" / "model.txt").read_text() == "weights"
    assert json.loads((tmp_path / "target" / STAGE_FILE).read_text()) == record
    again, reused = cached_stage(tmp_path / "target", "target", body, logs.append, "study")
    assert reused and again == record and len(calls) == 1
    assert logs[0].startswith("study: target: building") and logs[-1].startswith("study: target: reused")


def test_an_interrupted_stage_leaves_nothing_and_is_built_again(tmp_path):
    def failing(tmp):
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_stage(tmp_path / "s", "s", failing, lambda _: None, "study")
    assert not is_finished(tmp_path / "s") and not (tmp_path / "s" / "half.txt").exists()
    record, reused = cached_stage(tmp_path / "s", "s", lambda tmp: None, lambda _: None, "study")
    assert not reused and is_finished(tmp_path / "s") and set(record) == {"stage", "seconds"}
