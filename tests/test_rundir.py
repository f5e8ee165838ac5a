"""The one resume rule: a step is done once its record is written under the same stamp; a folder
stamped otherwise starts afresh (or moves aside), saying what changed."""

import json

from distill.rundir import RunDir, finish, resume


def test_a_step_is_done_once_its_record_is_written_under_the_same_stamp(tmp_path):
    step = tmp_path / "round1"
    record = step / "round.json"
    assert resume(step, {"rows": "a", "lr": 1e-4}, "changed", record=record) == {}
    assert json.loads((step / "fingerprint.json").read_text()) == {"lr": 1e-4, "rows": "a"}
    (step / "partial.jsonl").write_text("{}\n")  # work under way: a rerun resumes from it
    assert resume(step, {"rows": "a", "lr": 1e-4}, "changed", record=record) == {}
    assert (step / "partial.jsonl").exists()
    finish(record, {"round": 1, "stop": None})
    # the same stamp in another key order is the same step
    assert resume(step, {"lr": 1e-4, "rows": "a"}, "changed", record=record) == {"round": 1, "stop": None}


def test_a_changed_stamp_starts_the_folder_afresh_saying_what_changed(tmp_path, capsys):
    step, joined = tmp_path / "labels" / "corpus", tmp_path / "labels" / "corpus.parquet"
    resume(step, {"file": {"sha256": "old"}, "task": "t"}, "labeling it afresh")
    (step / "shard.parquet").write_text("x")
    joined.write_text("x")
    assert resume(step, {"file": {"sha256": "new"}, "task": "t"}, "labeling it afresh", also=(joined,)) == {}
    assert "labeling it afresh (file.sha256: \"old\" -> \"new\")" in capsys.readouterr().out
    assert not (step / "shard.parquet").exists() and not joined.exists()
    assert json.loads((step / "fingerprint.json").read_text())["file"] == {"sha256": "new"}


def test_a_superseded_round_moves_aside_with_what_it_paid_for(tmp_path):
    rounds = RunDir(tmp_path).grow
    rd = rounds.round(1)
    for n in (1, 2):
        resume(rd.dir, {"rows": n}, "moving it aside", record=rd.record, supersede=True)
        rd.judge.write_text(json.dumps({"paid": n}) + "\n")
        finish(rd.record, {"round": 1})
    assert resume(rd.dir, {"rows": 3}, "moving it aside", record=rd.record, supersede=True) == {}
    kept = sorted(p.name for p in rounds.superseded.iterdir())
    assert kept == ["round1.1", "round1.2"]
    assert [json.loads((rounds.superseded / k / "judge.jsonl").read_text())["paid"] for k in kept] == [1, 2]
    assert not rd.judge.exists()
