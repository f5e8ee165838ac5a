"""distill grow (author, rounds of train, score and judge) and task.shortlist, on the demo recipe
with a tiny student and the simulated teacher over HTTP."""

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import record_training

from distill.data import load_split, prepare_data, read_json, read_jsonl
from distill.errors import ConfigError, TeacherError
from distill.grow import grow
from distill.rundir import RunDir
from distill.shortlist import shortlist
from distill.tasks import build_task
from distill.tasks.requests import Judge
from distill.teach import teach
from distill.teacher import Simulator, Teacher

GROW = ("grow.rounds=3", "grow.texts=3", "grow.requests=2", "grow.top=12", "grow.explore=3",
        "grow.next_labels=1", "grow.min_gain=-1", "student=tiny_encoder", "train.epochs=6",
        "teacher.sim.author_off_topic=0.3")
STAGES = ["author.jsonl", "check.jsonl", *(f"round{k}/judge.jsonl" for k in (1, 2, 3))]  # what the teacher billed, by file


def yes_ids(round_dir: Path) -> dict[str, str]:
    """text id -> label of the pairs the teacher said yes to in one round."""
    return {v["meta"]["text_id"]: v["asked"] for v in read_jsonl(round_dir / "judge.jsonl") if v["label"] is True}


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    from distill.config import load_config

    run = tmp_path_factory.mktemp("grow") / "run"
    cfg = load_config(["recipe=demo", f"run_dir={run}", *GROW])
    return cfg, grow(cfg)


def test_each_round_trains_on_exactly_the_rows_accepted_so_far(grown):
    cfg, summary = grown
    out = Path(cfg.run_dir) / "grow"
    task = build_task(cfg.task)
    synthetic = read_jsonl(out / "synthetic.jsonl")
    accepted = {r["id"]: r["asked"] for r in synthetic if r["status"] == "accepted"}
    assert accepted and len(accepted) < len(synthetic)  # the check dropped some of what was written
    assert summary["stopped"] == "rounds" and len(summary["rounds"]) == 4
    corpus_gold = {r["id"]: r["label"] for r in load_split(cfg, "corpus", task)}
    judged_pairs, judged_before = set(), {}
    for k in (1, 2, 3, 4):
        judged_before[k] = set(judged_pairs)
        rd = out / f"round{k}"
        rows = read_jsonl(rd / "train_rows.jsonl")
        held = read_json(rd / "round.json")["dev_rows"]
        # every accepted row, once, with the label it was accepted under; only judged rows go to dev
        assert len({r["id"] for r in rows}) == len(rows)
        assert {r["id"]: r["label"] for r in rows if r["source"] == "author"} == {
            i: lab for i, lab in accepted.items()}
        judged = {r["id"]: r["label"] for r in rows if r["source"] == "judge"}
        assert len(judged) + held == len(accepted_before := {
            i: lab for j in range(1, k) for i, lab in yes_ids(out / f"round{j}").items()})
        assert all(accepted_before[i] == lab for i, lab in judged.items())
        assert (k in (1, 4)) == (held == 0)  # round 1 has judged nothing yet; the last learns from every row
        meta = read_json(rd / "student" / "student.json")
        assert meta["train_rows"] + meta["dev_rows"] == len(rows)
        assert not (rd / "student" / "checkpoints").exists()  # the round scored the corpus: they are spent
        for v in read_jsonl(rd / "judge.jsonl") if k < 4 else []:  # no pair is asked twice
            pair = (v["meta"]["text_id"], v["asked"])
            assert pair not in judged_pairs and v["meta"]["text_id"] in corpus_gold
            judged_pairs.add(pair)
    # grow.next_labels=1: a text the teacher said no to (and yes to nothing) is asked once more, under the
    # round student's likeliest label for it when that was not the one asked
    retried = 0
    for k in (1, 2, 3):
        verdicts = read_jsonl(out / f"round{k}" / "judge.jsonl")
        student = dict(zip(*pq.read_table(out / f"round{k}" / "predictions.parquet", columns=["id", "label"])
                           .to_pydict().values()))
        first = {}
        for v in verdicts:
            if v["meta"]["why"] != "next":
                first.setdefault(v["meta"]["text_id"], []).append(v)
        again = [v for v in verdicts if v["meta"]["why"] == "next"]
        assert len({v["meta"]["text_id"] for v in again}) == len(again)
        for v in again:
            said = first[v["meta"]["text_id"]]
            assert not any(f["label"] for f in said) and v["asked"] not in {f["asked"] for f in said}
            text_id, likeliest = v["meta"]["text_id"], student[v["meta"]["text_id"]]
            if likeliest not in {f["asked"] for f in said} and (text_id, likeliest) not in judged_before[k]:
                assert v["asked"] == likeliest
                retried += 1
        no_only = [t for t, said in first.items() if not any(f["label"] is not False for f in said)]
        assert len(again) >= 0.8 * len(no_only)  # short only where the student's two likeliest were both asked
    assert retried > 10
    # the judged rows the teacher accepted are mostly right (simulated at 85% with confusions)
    yes = {i: lab for k in (1, 2, 3) for i, lab in yes_ids(out / f"round{k}").items()}
    assert sum(corpus_gold[i] == lab for i, lab in yes.items()) / len(yes) > 0.7
    # the last student is where distill label looks, and the ledger adds up to the files
    assert (Path(cfg.run_dir) / "student" / "student.json").is_file()
    ledger = read_json(out / "ledger.json")
    billed = sum(r["cost_usd"] for f in STAGES for r in read_jsonl(out / f))
    assert ledger["total"]["usd"] == pytest.approx(billed, abs=1e-6) and billed > 0
    assert set(ledger) == {"author", "check", "judge round 1", "judge round 2", "judge round 3", "total"}
    # round 3 measured its gain on the dev rows judged in round 1, which neither student chose
    third = summary["rounds"][2]
    assert third["gain_rows"] > 0 and third["gain"] == pytest.approx(third["dev_accuracy"] - third["previous_dev_accuracy"])
    assert summary["rounds"][-1]["judged"] == 0 and summary["train_rows"] == len(accepted) + len(yes)


def test_authored_texts_come_from_the_held_out_pool_and_are_checked(grown):
    cfg, _ = grown
    task = build_task(cfg.task)
    pool = {r["text"]: r["label"] for r in load_split(cfg, "seed", task)}  # the demo's author pool
    others = {r["text"] for split in ("corpus", "gold") for r in load_split(cfg, split, task, labels=False)}
    synthetic = read_jsonl(Path(cfg.run_dir) / "grow" / "synthetic.jsonl")
    assert all(r["text"] in pool and r["text"] not in others for r in synthetic)
    assert {r["length"] for r in synthetic} == {"short", "long"} and all(r["subtopic"] for r in synthetic)
    accepted = [r for r in synthetic if r["status"] == "accepted"]
    dropped = [r for r in synthetic if r["status"] == "dropped"]
    assert all(r["checked_label"] == r["asked"] for r in accepted)
    assert all(r["checked_label"] != r["asked"] and r["label"] is None for r in dropped)
    # a third of what the author wrote is of another label: the check keeps fewer of those
    assert any(pool[r["text"]] != r["asked"] for r in synthetic)
    assert sum(pool[r["text"]] == r["asked"] for r in accepted) / len(accepted) > \
        sum(pool[r["text"]] == r["asked"] for r in dropped) / max(1, len(dropped))


def test_a_killed_grow_resumes_at_the_next_unfinished_round_and_repeats_no_request(grown, make_cfg, monkeypatch,
                                                                                  billed):
    import distill.grow

    trained = record_training(monkeypatch, distill.grow)

    class KilledWhileJudgingRound2(Teacher):
        def label(self, rows, out_path, desc="teacher"):
            if "round2" not in str(out_path):
                return super().label(rows, out_path, desc)
            super().label(rows[: len(rows) // 2], out_path, desc)
            raise KeyboardInterrupt  # as if the process were stopped halfway through round 2's questions

    cfg = make_cfg("demo", *GROW)
    monkeypatch.setattr(distill.grow, "Teacher", KilledWhileJudgingRound2)
    with pytest.raises(KeyboardInterrupt):
        grow(cfg)
    out = Path(cfg.run_dir) / "grow"
    first = (out / "round1" / "round.json").read_text()
    half = len(read_jsonl(out / "round2" / "judge.jsonl"))
    assert trained == ["round1", "round2"] and half > 0 and not (out / "round2" / "round.json").exists()
    monkeypatch.setattr(distill.grow, "Teacher", Teacher)
    summary = grow(cfg)
    # round 1 is kept as it was, round 2 is not trained again: its questions go on where they stopped
    assert trained == ["round1", "round2", "round3", "round4"] and len(summary["rounds"]) == 4
    assert (out / "round1" / "round.json").read_text() == first
    assert len(read_jsonl(out / "round2" / "judge.jsonl")) > half
    # the teacher billed each request once across both runs, as many as one uninterrupted run did
    reference = Path(grown[0].run_dir) / "grow"
    assert sum(billed) == sum(r["requests"] for f in STAGES for r in read_jsonl(reference / f))
    assert sorted(r["id"] for r in read_jsonl(out / "judgments.jsonl")) == \
        sorted(r["id"] for r in read_jsonl(reference / "judgments.jsonl"))


@pytest.mark.extended
def test_grow_stops_at_the_teacher_budget_and_goes_on_when_it_is_raised(grown, make_cfg):
    cfg = make_cfg("demo", *GROW, "teacher.budget_usd=0.02")
    summary = grow(cfg)
    assert summary["stopped"] == "budget" and len(summary["rounds"]) == 2
    assert 0.01 < summary["ledger"]["total"]["usd"] <= 0.02
    assert summary["rounds"][0]["budget_spent"] and summary["rounds"][-1]["stop"] == "budget"
    asked = Counter(v["asked"] for v in read_jsonl(Path(cfg.run_dir) / "grow" / "round1" / "judge.jsonl")
                    if "step" not in v["meta"])  # cut short: every label was asked about about as often
    assert len(asked) == 4 and max(asked.values()) - min(asked.values()) <= 2, asked
    assert (Path(cfg.run_dir) / "student" / "student.json").is_file()  # trained on what was accepted
    # a higher budget finishes the run: round 1's questions go on, and the result is one full run's
    summary = grow(make_cfg("demo", *GROW, "teacher.budget_usd=1"))
    assert summary["stopped"] == "rounds" and len(summary["rounds"]) == 4
    assert summary["ledger"]["total"]["usd"] == pytest.approx(grown[1]["ledger"]["total"]["usd"], abs=1e-6)


def test_the_judge_asks_one_yes_or_no_question_per_pair_and_reads_its_confidence(make_cfg, tmp_path):
    cfg = make_cfg("demo", "teacher.sim.accuracy=1.0")
    task = build_task(cfg.task)
    prepare_data(cfg)
    gold = list(load_split(cfg, "gold", task, labels=True))[:20]
    judge = Judge(task)
    pairs = [{"id": f"{r['id']}-{label}", "text": r["text"], "asked": label, "meta": {"text_id": r["id"]}}
             for r in gold for label in (r["label"], next(x for x in task.labels if x != r["label"]))]
    messages = judge.messages(pairs[0])
    assert [m["role"] for m in messages] == ["system", "user"]
    question = messages[1]["content"]
    assert question.count(pairs[0]["text"]) == 1 and question.count("?") == 1 and "yes or no" in question
    definition = task.definitions()[pairs[0]["asked"]]
    assert definition in question
    # besides the text and the definition, a few dozen tokens: the judge is paid for per pair
    words = len(messages[0]["content"]) + len(question) - len(pairs[0]["text"]) - len(definition)
    assert words < 150, messages
    settings = {**dict(cfg.teacher), "output": "choice", "sim": dict(cfg.teacher.sim)}
    with Simulator(task, {"gold": gold}, cfg.teacher.sim) as sim:
        teacher = Teacher(settings, judge, base_url=sim.base_url, simulated=True, cache_path=tmp_path / "c.sqlite")
        body = teacher.body(messages, pairs[0])
        assert body["max_tokens"] == 2 and "response_format" not in body
        assert body["metadata"] == {"distill_request": "judge", "label": pairs[0]["asked"], "text": pairs[0]["text"]}
        teacher.label(pairs, tmp_path / "judge.jsonl")
    records = {r["id"]: r for r in read_jsonl(tmp_path / "judge.jsonl")}
    assert [records[p["id"]]["label"] for p in pairs] == [True, False] * len(gold)
    assert all(0 < r["confidence"] <= 1 and r["confidence_source"] == "logprobs" and r["completion_tokens"] <= 2
               for r in records.values())


def test_written_texts_with_their_spacing_collapsed_are_checked_in_one_request_each(make_cfg, tmp_path):
    # real texts often hold runs of spaces; the author's reply parser collapses them
    cfg = make_cfg("demo", "teacher.sim.accuracy=1.0")
    task = build_task(cfg.task)
    prepare_data(cfg)
    gold = [{**r, "text": r["text"].replace(" ", "  ", 1)} for r in list(load_split(cfg, "gold", task, labels=True))[:12]]
    written = [{"id": r["id"], "text": " ".join(r["text"].split())} for r in gold]
    assert all(w["text"] != r["text"] for w, r in zip(written, gold))
    settings = {**dict(cfg.teacher), "sim": dict(cfg.teacher.sim)}
    with Simulator(task, {"gold": gold}, cfg.teacher.sim) as sim:
        teacher = Teacher(settings, task, base_url=sim.base_url, simulated=True, cache_path=tmp_path / "c.sqlite")
        teacher.label(written, tmp_path / "check.jsonl")
        assert sim.billed == len(written)  # no re-asks
    records = {r["id"]: r for r in read_jsonl(tmp_path / "check.jsonl")}
    assert [records[r["id"]]["label"] for r in gold] == [r["label"] for r in gold]


def wilson_low(p: float, n: int, z: float = 2.58) -> float:
    """The lower end of the 99% Wilson interval of a share p of n."""
    return (p + z * z / (2 * n) - z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def test_the_shortlist_holds_the_gold_label_at_the_rate_it_promised(make_cfg):
    # a byte-level tiny student: its random embeddings rank the labels of a text the same way in every call
    cfg = make_cfg("demo", "task.shortlist_target=0.7")
    chosen = shortlist(cfg)
    k = chosen["k"]
    assert 1 <= k < 4 and chosen["promised"] >= 0.7
    assert (Path(cfg.run_dir) / "shortlist" / "shortlist.png").stat().st_size > 0
    # the seed rows (not those K was chosen on) get shortlists of K labels from the same ranking
    cfg = make_cfg("demo", f"task.shortlist={k}", "monitor.score_teacher=false")
    teach(cfg)
    task = build_task(cfg.task)
    gold = {r["id"]: r["label"] for r in load_split(cfg, "seed", task)}
    records = read_jsonl(Path(cfg.run_dir) / "teacher" / "seed.jsonl")
    assert all(len(r["shortlist"]) == k for r in records)
    held = sum(gold[r["id"]] in r["shortlist"] for r in records) / len(records)
    assert held >= wilson_low(chosen["promised"], chosen["dev_rows"]) - 2.58 * math.sqrt(0.25 / len(records))
    # the teacher answers from what it was offered: a row without its gold label cannot be right
    assert all(r["label"] in r["shortlist"] for r in records if r["label"])
    assert not any(r["label"] == gold[r["id"]] for r in records if gold[r["id"]] not in r["shortlist"])


def test_candidates_are_drawn_from_depth_times_top_likeliest_rows_never_those_taken_or_judged(
        make_cfg, tmp_path, monkeypatch):
    import distill.grow as grow_module

    class Ranked:  # a student whose score for label c falls with the row's index, shifted by c
        @classmethod
        def load(cls, *args):
            return cls()

        def class_scores(self, rows, batch_size, progress=False):
            index = np.array([int(r["id"][1:]) for r in rows], np.float32)[:, None]
            return np.log(np.full((len(rows), 4), 0.25, np.float32)) - (index + np.arange(4)) / 1000

    monkeypatch.setattr(grow_module, "student_class", lambda spec: Ranked)
    corpus = [{"id": f"r{i}", "text": f"row {i}"} for i in range(60)]
    accepted = [{"id": "r0", "label": "science", "source": "judge"}]
    task = build_task(make_cfg("demo").task)
    def picked(depth: int) -> dict[str, list[int]]:
        cfg = make_cfg("demo", "grow.top=4", f"grow.depth={depth}", "grow.explore=0", "label.window=25")
        out = RunDir(tmp_path / f"depth{depth}").grow
        for k in (1, 2):
            out.round(k).dir.mkdir(parents=True)
        out.round(1).judge.write_text(json.dumps({"meta": {"text_id": "r1"}, "asked": task.labels[0]}) + "\n")
        grow_module.candidates(cfg, task, out, 2, corpus, accepted)
        asked = read_jsonl(out.round(2).candidates)
        # labels take turns: a budget that runs out mid-round has asked about each as often
        assert [r["asked"] for r in asked] == [task.labels[j % len(task.labels)] for j in range(len(asked))]
        out: dict[str, list[int]] = {}
        for r in asked:
            out.setdefault(r["asked"], []).append(int(r["meta"]["text_id"][1:]))
        return out

    # depth 1: each label's four likeliest rows, less r0 (accepted) and r1 for the label it was judged for
    assert picked(1) == {label: ([2, 3, 4, 5] if c == 0 else [1, 2, 3, 4]) for c, label in enumerate(task.labels)}
    # depth 3: four of the twelve likeliest, not all of them the very top
    for c, (label, rows) in enumerate(picked(3).items()):
        likeliest = [i for i in range(1, 60) if not (c == 0 and i == 1)][:12]
        assert len(set(rows)) == 4 and set(rows) <= set(likeliest) and set(rows) != set(likeliest[:4])


def test_follow_up_questions_come_in_candidate_order_whatever_order_the_replies_came_in():
    from distill.grow import next_labels

    labels = ["a", "b", "c", "d"]
    asked = [{"id": f"q{i}", "text": f"text {i}", "asked": labels[i % 4],
              "meta": {"text_id": f"t{i}", "why": "top", "ranked": [labels[(i + j) % 4] for j in range(3)]}}
             for i in range(12)]
    yes = {"t4", "t9"}  # yes to these: never asked again

    def replies(questions, order):
        return [{**questions[i], "label": questions[i]["meta"]["text_id"] in yes} for i in order]

    rng = np.random.default_rng(0)
    for _ in range(5):  # replies arrive in any order under concurrency
        first = next_labels(asked, replies(asked, rng.permutation(12)), 1)
        assert [q["meta"]["text_id"] for q in first] == [f"t{i}" for i in range(12) if f"t{i}" not in yes]
        assert all(q["asked"] == q["meta"]["ranked"][1] and q["meta"]["step"] == 1 for q in first)
        verdicts = replies(asked, range(12)) + replies(first, rng.permutation(len(first)))
        second = next_labels(asked, verdicts, 2)
        assert [q["meta"]["text_id"] for q in second] == [q["meta"]["text_id"] for q in first]
        assert all(q["asked"] == q["meta"]["ranked"][2] for q in second)


def test_grow_and_shortlist_refuse_what_they_cannot_do(make_cfg):
    with pytest.raises(ConfigError, match="one label per text"):
        grow(make_cfg("demo_ner"))
    with pytest.raises(ConfigError, match="grow.top must be at least 1, not 0"):
        make_cfg("demo", "grow.top=0")
    with pytest.raises(ConfigError, match="grow.depth must be a whole number"):
        make_cfg("demo", "grow.depth=deep")
    with pytest.raises(ConfigError, match="grow.next_labels must be at least 0, not -1"):
        make_cfg("demo", "grow.next_labels=-1")
    with pytest.raises(ConfigError, match="asks the teacher online"):
        grow(make_cfg("demo", "teacher.mode=batch"))
    with pytest.raises(TeacherError, match="budget .* ran out while it wrote"):
        grow(make_cfg("demo", "teacher.budget_usd=0.001", run="poor"))
    dry = make_cfg("demo", "teacher.dry_run=true", run="dry")  # an estimate, and nothing sent
    estimate = grow(dry)
    assert estimate["dry_run"] and estimate["total"]["cost_usd"] > estimate["author"]["cost_usd"] > 0
    assert not (Path(dry.run_dir) / "grow" / "author.jsonl").exists()
    with pytest.raises(ConfigError, match="task.shortlist must be a number of labels, not 0"):
        make_cfg("demo", "task.shortlist=0")
    messages = build_task(make_cfg("demo").task).messages({"text": "x", "shortlist": ["science", "weather"]})
    assert "science, weather." in messages[0]["content"] and "sports" not in messages[0]["content"]
