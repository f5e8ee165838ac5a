"""Grow stage: training data from a taxonomy, in rounds, for a fraction of what labeling costs.

    distill grow recipe=NAME [grow.rounds=2] [grow.top=10] [grow.explore=2] [teacher.budget_usd=5]

1. Author: for each label the teacher writes `grow.texts` texts per request, `grow.requests`
   requests each of another length and style, about a sub-topic it chooses. It then labels each
   text as it would any row (shortlisted with task.shortlist): texts it labels otherwise are
   dropped, or kept under its label with grow.disagreements=relabel (hard negatives for the
   label they were written for). -> grow/synthetic.jsonl
2. Round k = 1, 2, ...: a student trains (the train stage, in grow/round{k}) on every row
   accepted so far, less a dev share of the judged ones, and scores the corpus. For each label
   `grow.top` of its `grow.depth` x `grow.top` likeliest corpus rows not judged yet (all of the
   top ones at depth 1), and `grow.explore` random ones, go to the teacher as yes/no questions;
   yes answers join the accepted rows. With `grow.next_labels=R`, a text judged no is asked about
   again under the student's next likeliest label, up to R more times: the rows it gets wrong.
3. It stops after `grow.rounds` judging rounds, when the teacher's budget is spent, or when a round's
   student gains less than `grow.min_gain` accuracy over the previous one on the judged dev rows
   neither chose. A last round then trains a student on every accepted row, dev rows included,
   and judges nothing; it is copied to {run_dir}/student, where distill label finds it.

A round is finished once its round.json is written: a killed grow resumes at the next unfinished
round (within one, at its judging, from the candidates it wrote), and any question asked before is
answered by the teacher's cache without being billed again. A round that stopped is looked at
again on every run, so a higher `grow.rounds` or budget goes on from it. grow/judgments.jsonl keeps every
verdict, grow/ledger.json the tokens and USD of each stage and round, grow/grow.json the summary.
"""

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("grow", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import json
import shutil
import sys
from contextlib import contextmanager
from itertools import zip_longest
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from distill.config import save_config
from distill.data import (
    check_held_out,
    content_id,
    load_split,
    prepare_data,
    read_json,
    read_jsonl,
    text_key,
    write_atomic,
)
from distill.errors import DataError, TeacherError
from distill.schema import check_grow
from distill.shortlist import size as shortlist_size
from distill.shortlist import with_shortlists
from distill.students import student_class
from distill.students.base import free_memory
from distill.tasks import build_task
from distill.tasks.requests import Author, Judge
from distill.teacher import Teacher, open_endpoint
from distill.teacher.simulator import sim_rows
from distill.api import fit
from distill.rundir import Grow, GrowRound, RunDir, StudentDir, finish, resume
from distill.train import rows_hash

def grow(cfg) -> dict:
    task = build_task(cfg.task)
    check_grow(cfg, task)
    run = RunDir(cfg.run_dir)
    out = run.grow
    out.dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.root)
    prepare_data(cfg)

    # data: the corpus the student searches; gold stays out of everything grow trains on
    corpus = [{"id": r["id"], "text": r["text"]} for r in load_split(cfg, "corpus", task, labels=False)]
    gold_texts = load_split(cfg, "gold", task, labels=False)["text"]
    check_held_out(gold_texts, [r["text"] for r in corpus], "corpus")
    if cfg.teacher.dry_run:
        return dry_run(cfg, task, corpus)
    with endpoint(cfg, task) as ask:
        # round 0: the teacher writes texts for every label and labels what it wrote
        accepted, spent = author(cfg, task, ask, out, set(map(text_key, gold_texts)))

        # rounds: train on what is accepted, score the corpus, ask the teacher about the best matches;
        # once the stop is known before a round trains, that round's student is the last
        k, last = 0, None
        while True:
            k += 1
            last = last or ("budget" if spent else "rounds" if k > cfg.grow.rounds else None)
            record = one_round(cfg, task, ask, out, k, corpus, accepted, last)
            if last:
                break
            accepted += read_jsonl(out.round(k).accepted)
            spent, last = record["budget_spent"], record["stop"]  # "gain": the next round is the last

    # the last student is the one distill label uses; the ledger and every verdict beside it
    shutil.rmtree(run.student, ignore_errors=True)
    shutil.copytree(out.round(k).student, run.student, ignore=shutil.ignore_patterns("checkpoints"))
    rounds = [read_json(out.round(j).record) for j in range(1, k + 1)]
    write_atomic(out.judgments, "".join(
        json.dumps({**r, "round": j}) + "\n" for j in range(1, k + 1) for r in read_jsonl(out.round(j).judge)))
    costs = ledger(out, k)
    write_atomic(out.ledger, json.dumps(costs, indent=2))
    summary = {"rounds": rounds, "stopped": record["stop"], "student": str(run.student),
               "train_rows": rounds[-1]["train_rows"], "sources": rounds[-1]["sources"], "ledger": costs,
               "simulated": bool(cfg.teacher.simulated), "teacher": cfg.teacher.model}
    write_atomic(out.summary, json.dumps(summary, indent=2))
    print(format_summary(summary, out))
    return summary


@contextmanager
def endpoint(cfg, task):
    """`ask(request, rows, path, desc, **teacher_settings)`: one kind of question (labeling, judging,
    writing) for each row not yet in `path`, through the teacher engine on one endpoint and one
    cache; returns that call's stats."""
    with open_endpoint(cfg.teacher, task, sim_rows(cfg, task) if cfg.teacher.simulated else ()) as base_url:
        def ask(request, rows: list[dict], path: Path, desc: str, **settings) -> dict:
            # made per call: the budget counts what the calls before it billed into the cache
            teacher = Teacher({**OmegaConf.to_container(cfg.teacher, resolve=True), "samples": 1, **settings},
                              request, base_url=base_url, simulated=bool(cfg.teacher.simulated))
            try:
                return teacher.label(rows, path, desc)
            finally:
                teacher.cache.close()
        yield ask


# -- round 0: the author ---------------------------------------------------------------------------

def author_settings(cfg) -> dict:
    """The author answers in JSON (a bare-label teacher.output asks for JSON objects here)."""
    return {"output": cfg.teacher.output if cfg.teacher.output != "choice" else "json_object", "logprobs": False}


def author_requests(cfg, task) -> list[dict]:
    """`grow.requests` requests per label, each with the next length and style."""
    g = cfg.grow
    attrs = [(g.lengths[j % len(g.lengths)], g.styles[j % len(g.styles)]) for j in range(g.requests)]
    return [{"id": content_id(f"author\x00{label}\x00{j}\x00{length}\x00{style}\x00{g.texts}"),
             "text": f"{label}: {g.texts} texts, {length}, {style}", "asked": label, "n": g.texts,
             "length": length, "style": style} for label in task.labels for j, (length, style) in enumerate(attrs)]


def author(cfg, task, ask, out: Grow, gold_texts: set[str]) -> tuple[list[dict], bool]:
    """The authored texts the teacher labels as the label they were written for (or relabels);
    and whether the budget ran out."""
    g = cfg.grow
    requests = author_requests(cfg, task)
    stats = ask(Author(task), requests, out.author, "teacher: writing", **author_settings(cfg))
    spent = stats["stopped"] == "budget"

    # every new text once, with where it came from; none that is also a gold text
    written, in_gold = {}, 0
    asked = {r["id"]: r for r in requests}  # in request order; records of other settings are left out
    records = {r["id"]: r for r in read_jsonl(out.author)}
    for req, rec in ((req, records[i]) for i, req in asked.items() if i in records):
        for text in (rec["label"] or {}).get("texts", []):
            if text_key(text) in gold_texts:
                in_gold += 1
                continue
            written.setdefault(content_id(text), {
                "id": content_id(text), "text": text, "asked": rec["asked"],
                "meta": {"request": rec["id"], "subtopic": rec["label"]["subtopic"], "length": req["length"],
                         "style": req["style"], "model": rec["model"], "simulated": rec["simulated"]}})
    rows = list(written.values())
    if not spent and rows:  # the teacher labels each text it wrote, as any row (shortlisted if set)
        k = shortlist_size(cfg, task)
        checked = {r["id"] for r in read_jsonl(out.check)}
        todo = [r for r in rows if r["id"] not in checked]
        if k and todo:  # the label a text was written for is always offered: that is what is checked
            todo = [{**r, "shortlist": r["shortlist"] if r["asked"] in r["shortlist"] else
                     [*r["shortlist"][: k - 1], r["asked"]]}
                    for r in with_shortlists(cfg, task, todo, k, out.shortlists)]
        stats = ask(task, todo, out.check, "teacher: checking what it wrote")
        spent = stats["stopped"] == "budget"
    checks = {r["id"]: r for r in read_jsonl(out.check)}
    synthetic, accepted = [], []
    for row in rows:
        c = checks.get(row["id"], {})
        status = ("unchecked" if not c else "accepted" if c["label"] == row["asked"] else
                  "relabeled" if c["label"] is not None and g.disagreements == "relabel" else "dropped")
        label = row["asked"] if status == "accepted" else c.get("label") if status == "relabeled" else None
        synthetic.append({"id": row["id"], "text": row["text"], "label": label, "asked": row["asked"],
                          "checked_label": c.get("label"), "check_confidence": c.get("confidence"),
                          "status": status, "source": "author", **row["meta"]})
        if label is not None:
            accepted.append({"id": row["id"], "text": row["text"], "label": label, "source": "author"})
    write_atomic(out.synthetic, "".join(json.dumps(r) + "\n" for r in synthetic))
    if not accepted:
        if spent:
            raise TeacherError(f"the teacher's budget (teacher.budget_usd={cfg.teacher.budget_usd}) ran out while it "
                               f"wrote and checked texts, before any was accepted: raise it and rerun (nothing paid "
                               f"for is asked again)")
        raise DataError(f"the teacher accepted none of the {len(rows)} texts it wrote ({out.synthetic}); "
                        f"check the labels' definitions in task.guidelines, or set grow.disagreements=relabel")
    counts = {s: sum(r["status"] == s for r in synthetic) for s in ("accepted", "relabeled", "dropped", "unchecked")}
    print(f"grow: the teacher wrote {len(rows)} new texts for {len(task.labels)} labels"
          + (f" ({in_gold} more were gold texts, left out)" if in_gold else "") + "; checked: "
          + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return accepted, spent


# -- rounds: train, score, judge -----------------------------------------------------------------

def in_dev(row: dict, fraction: float) -> bool:
    """Judged rows held out of training to measure each round's gain (by a hash of the id)."""
    return row["source"] == "judge" and int(content_id(f"dev\x00{row['id']}"), 16) / 16**16 < fraction


def one_round(cfg, task, ask, out: Grow, k: int, corpus: list[dict], accepted: list[dict], last: str | None) -> dict:
    """Round k: train on `accepted` less the dev rows, score the corpus, judge the candidates; its
    round.json is the record. The last round (`last`: why grow stops) trains on every accepted row
    and judges nothing. A round that judged is reused while its rows and settings hold; one that
    stopped (rounds, gain, budget) is looked at again, since those settings may have changed."""
    g, rd = cfg.grow, out.round(k)
    train_rows = [r for r in accepted if last or not in_dev(r, g.dev_fraction)]
    dev_rows = [r for r in accepted if not last and in_dev(r, g.dev_fraction)]
    # what decides the round's student and its candidates
    fingerprint = {"rows": rows_hash(train_rows), "top": g.top, "depth": g.depth, "explore": g.explore,
                   "next_labels": g.next_labels, "dev_fraction": g.dev_fraction,
                   **{key: OmegaConf.to_container(cfg[key]) for key in ("student", "train", "task")}}
    done = resume(rd.dir, fingerprint, f"grow: round {k} was made from other rows or settings; moving it to "
                                       f"{out.superseded} (its verdicts stay in the ledger)",
                  record=rd.record, supersede=True)
    if done and done["stop"] is None and not done["budget_spent"]:
        print(f"grow: round {k} already done ({rd.dir})")
        return done

    # the student: the train stage on exactly the rows accepted so far; then its scores on the corpus
    if not rd.candidates.exists():
        write_atomic(rd.train_rows, "".join(json.dumps(r) + "\n" for r in train_rows))
        sources = {s: sum(r["source"] == s for r in train_rows) for s in ("author", "judge")}
        print(f"grow: round {k}: training on {len(train_rows)} rows ({sources['author']} authored, "
              f"{sources['judge']} judged; {len(dev_rows)} judged rows held out as dev)")
        fit(cfg, train_rows, rd.student,
            f"grow round {k}: {sources['author']} authored and {sources['judge']} judged rows")
        candidates(cfg, task, out, k, corpus, accepted)
        shutil.rmtree(StudentDir(rd.student).checkpoints, ignore_errors=True)  # scored: no training resumes from them
    # the gain, on dev rows judged before round k-1: neither this student nor the previous one chose them
    fair = [r for r in dev_rows if r["round"] <= k - 2]
    dev_accuracy = accuracy(rd, fair)
    before = accuracy(out.round(k - 1), fair) if k > 1 else None
    gain = None if before is None or dev_accuracy is None else dev_accuracy - before

    # stop, or ask the teacher about this round's candidates
    stop = last or ("gain" if gain is not None and gain < float(g.min_gain) else None)
    stats, verdicts = {"stopped": None}, []
    if stop is None:
        asked = read_jsonl(rd.candidates)
        stats = ask(Judge(task), asked, rd.judge, f"teacher: judging, round {k}", output="choice")
        verdicts = read_jsonl(rd.judge)
        # after a no, the text's next likeliest label: the rows the student gets wrong teach it most
        for step in range(1, g.next_labels + 1):
            again = [] if stats["stopped"] == "budget" else next_labels(asked, verdicts, step)
            if not again:
                break
            stats = ask(Judge(task), again, rd.judge, f"teacher: judging, round {k}, next labels", output="choice")
            verdicts = read_jsonl(rd.judge)
    # a text judged yes for several labels keeps its surest
    best: dict[str, dict] = {}
    for v in sorted(verdicts, key=lambda v: -(v["confidence"] or 0)):
        if v["label"] is True:
            best.setdefault(v["meta"]["text_id"], v)
    new = [{"id": v["meta"]["text_id"], "text": v["text"], "label": v["asked"], "source": "judge",
            "round": k, "confidence": v["confidence"]} for v in best.values()]
    write_atomic(rd.accepted, "".join(json.dumps(r) + "\n" for r in new))
    record = {"round": k, "train_rows": len(train_rows),
              "sources": {s: sum(r["source"] == s for r in train_rows) for s in ("author", "judge")},
              "dev_rows": len(dev_rows), "gain_rows": len(fair), "dev_accuracy": dev_accuracy,
              "previous_dev_accuracy": before, "gain": gain,
              "judged": len(verdicts), "asked_again": sum(v["meta"].get("why") == "next" for v in verdicts),
              "yes": sum(v["label"] is True for v in verdicts),
              "no": sum(v["label"] is False for v in verdicts), "invalid": sum(v["label"] is None for v in verdicts),
              "accepted": len(new), "budget_spent": stats["stopped"] == "budget", "stop": stop,
              "student": str(rd.student)}
    finish(rd.record, record)
    if stop is None:
        again = f" ({record['asked_again']} asked again under another label)" if record["asked_again"] else ""
        print(f"grow: round {k}: {record['yes']} of {record['judged']} candidates judged yes{again}, "
              f"{len(new)} rows accepted" + (f"; dev accuracy {dev_accuracy:.3f}" if dev_accuracy is not None else "")
              + (f" ({gain:+.3f})" if gain is not None else ""))
    return record


def next_labels(asked: list[dict], verdicts: list[dict], step: int) -> list[dict]:
    """The questions of grow.next_labels at `step`: for each text the teacher said no to at the step
    before (0: the candidates) and yes to nothing, the first of the student's likeliest labels for it
    (its candidate's `ranked`) that it was not asked about in this round. In candidate order, not the
    order the replies arrived in: a budget that runs out among them stops at the same questions."""
    first = {}
    for i, r in enumerate(asked):
        first.setdefault(r["meta"]["text_id"], i)
    before = sorted((v for v in verdicts if v["meta"].get("step", 0) < step),
                    key=lambda v: first.get(v["meta"]["text_id"], len(asked)))
    pairs = {(r["meta"]["text_id"], r["asked"]) for r in [*asked, *before]}
    said_yes = {v["meta"]["text_id"] for v in before if v["label"] is True}
    again = {}
    for v in before:
        text_id = v["meta"]["text_id"]
        latest_no = v["label"] is False and v["meta"].get("step", 0) == step - 1
        if latest_no and text_id not in said_yes and text_id not in again:
            label = next((c for c in v["meta"]["ranked"] if (text_id, c) not in pairs), None)
            if label is not None:
                again[text_id] = {"id": content_id(f"{text_id}\x00{label}"), "text": v["text"], "asked": label,
                                  "meta": {**v["meta"], "why": "next", "step": step}}
    return list(again.values())


def accuracy(rd: GrowRound, rows: list[dict]) -> float | None:
    """How many of `rows` round rd's student labels as they were accepted (None for no rows)."""
    if not rows:
        return None
    predictions = pq.read_table(rd.predictions, columns=["id", "label"]).to_pydict()
    label = dict(zip(predictions["id"], predictions["label"]))
    known = [r for r in rows if r["id"] in label]
    return float(np.mean([label[r["id"]] == r["label"] for r in known])) if known else None


def candidates(cfg, task, out: Grow, k: int, corpus: list[dict], accepted: list[dict]) -> None:
    """The round's student scores the corpus: its label for every row (predictions.parquet) and,
    per label, `top` of its `depth` x `top` likeliest rows not yet accepted or judged for that
    label plus a random exploration sample (candidates.jsonl, written last: its presence marks
    the scoring done)."""
    g, rd = cfg.grow, out.round(k)
    deep = g.top * g.depth
    student = student_class(cfg.student).load(cfg.student, task, rd.student)
    judged = {(v["meta"]["text_id"], v["asked"]) for j in range(1, k) for v in read_jsonl(out.round(j).judge)}
    taken = {r["id"] for r in accepted}
    n_labels, window = len(task.labels), int(cfg.label.window)
    top_score = np.full((n_labels, deep), -np.inf, np.float32)
    top_index = np.full((n_labels, deep), -1, np.int64)
    labels, confidence, ranks = [], [], []
    for start in range(0, len(corpus), window):
        rows = corpus[start : start + window]
        scores = student.class_scores(rows, cfg.label.batch_size, progress=True)
        labels += [task.labels[j] for j in scores.argmax(1)]
        confidence += np.exp(scores.max(1)).tolist()
        # never again: accepted rows, and pairs already judged
        scores[[i for i, r in enumerate(rows) if r["id"] in taken]] = -np.inf
        at = {r["id"]: i for i, r in enumerate(rows)}
        for text_id, label in judged:
            if text_id in at:
                scores[at[text_id], task.labels.index(label)] = -np.inf
        if g.next_labels:  # each row's likeliest labels not judged for it yet (-1: none left)
            order = np.argsort(-scores, 1, kind="stable")[:, : min(n_labels, g.next_labels + 1)]
            order[~np.isfinite(np.take_along_axis(scores, order, 1))] = -1
            ranks.append(order.astype(np.int32))
        for c in range(n_labels):
            column = scores[:, c]
            both_score = np.concatenate([top_score[c], column])
            both_index = np.concatenate([top_index[c], np.arange(start, start + len(rows))])
            keep = np.argsort(-both_score, kind="stable")[:deep]
            top_score[c], top_index[c] = both_score[keep], both_index[keep]
    del student
    free_memory()
    ranks = np.concatenate(ranks) if ranks else None

    # exploration: random rows per label, neither taken, judged for it, nor among its top rows
    rng = np.random.default_rng([int(cfg.seed), k])
    per_label = []
    for c, label in enumerate(task.labels):
        likely = [int(i) for i, s in zip(top_index[c], top_score[c]) if i >= 0 and np.isfinite(s)]
        # depth > 1: a sample of the likely rows, less alike than the surest ones
        picked = sorted(rng.choice(len(likely), g.top, replace=False)) if len(likely) > g.top else range(len(likely))
        top = [likely[j] for j in picked]
        explore, seen = [], set(likely)
        for i in rng.integers(len(corpus), size=20 * g.explore + 20) if g.explore else []:  # O(1) in the corpus
            r = corpus[int(i)]
            if int(i) not in seen and r["id"] not in taken and (r["id"], label) not in judged:
                explore.append(int(i))
                seen.add(int(i))
            if len(explore) == g.explore:
                break
        questions = []
        for why, picked in (("top", top), ("explore", explore)):
            for i in picked:
                r = corpus[i]
                meta = {"text_id": r["id"], "round": k, "why": why}
                if ranks is not None:  # what grow.next_labels asks about after a no
                    meta["ranked"] = [task.labels[j] for j in ranks[i] if j >= 0]
                questions.append({"id": content_id(f"{r['id']}\x00{label}"), "text": r["text"], "asked": label,
                                  "meta": meta})
        per_label.append(questions)
    # one label after another, so that a budget running out mid-round leaves every label as many questions
    asked = [q for turn in zip_longest(*per_label) for q in turn if q is not None]
    pq.write_table(pa.table({"id": [r["id"] for r in corpus], "label": labels, "confidence": confidence}),
                   rd.predictions)
    write_atomic(rd.candidates, "".join(json.dumps(r) + "\n" for r in asked))


# -- costs ----------------------------------------------------------------------------------------

def dry_run(cfg, task, corpus: list[dict]) -> dict:
    """Estimated requests, tokens and USD of writing, checking and judging; nothing is sent.
    Random corpus texts stand in for the texts not written or found yet."""
    g, k = cfg.grow, shortlist_size(cfg, task)
    rng = np.random.default_rng(int(cfg.seed))
    texts = [corpus[int(i)]["text"] for i in rng.integers(0, len(corpus), len(task.labels) * max(
        g.texts * g.requests, g.top + g.explore))]
    written = [{"id": f"w{i}", "text": t, **({"shortlist": task.labels[:k]} if k else {})}
               for i, t in enumerate(texts[: len(task.labels) * g.texts * g.requests])]
    pairs = [{"id": f"p{i}", "text": t, "asked": task.labels[i % len(task.labels)]}
             for i, t in enumerate(texts[: len(task.labels) * (g.top + g.explore)])]
    stages = {"author": (Author(task), author_requests(cfg, task), author_settings(cfg)),
              "check": (task, written, {}), "judge, a round": (Judge(task), pairs, {"output": "choice"})}
    settings = {**OmegaConf.to_container(cfg.teacher, resolve=True), "samples": 1}
    estimates = {name: Teacher({**settings, **more}, request, simulated=bool(cfg.teacher.simulated),
                               need_key=False).estimate(rows) for name, (request, rows, more) in stages.items()}
    total = {key: sum((e[key] or 0) * (cfg.grow.rounds if name.startswith("judge") else 1) for name, e in estimates.items())
             for key in ("rows", "prompt_tokens", "completion_tokens", "cost_usd")}
    lines = [f"dry run: distill grow with teacher {cfg.teacher.model}, nothing was sent",
             f"{'stage':<16} {'requests':>9} {'prompt tok':>11} {'answer tok':>11} {'USD':>9}"]
    for name, e in {**estimates, f"total, {cfg.grow.rounds} rounds": total}.items():
        usd_text = f"{e['cost_usd']:>9.4f}" if estimates["author"]["cost_usd"] is not None else f"{'no price':>9}"
        lines.append(f"{name:<16} {e['rows']:>9} {e['prompt_tokens']:>11} {e['completion_tokens']:>11} {usd_text}")
    uncounted = (f"; with grow.next_labels={g.next_labels} each no may add as many questions, not counted"
                 if g.next_labels else "")
    lines.append("(tokens estimated at 4 characters each; the texts to check and judge are not known yet, so "
                 f"random corpus texts stand in for them{uncounted})")
    print("\n".join(lines))
    return {"dry_run": True, **estimates, "total": total}


def ledger(out: Grow, rounds: int) -> dict:
    """Requests, tokens and USD billed for writing, checking and judging (each round apart)."""
    def total(records: list[dict]) -> dict:
        return {"rows": len(records), "requests": sum(r["requests"] for r in records if not r["cached"]),
                "prompt_tokens": sum(r["prompt_tokens"] for r in records),
                "completion_tokens": sum(r["completion_tokens"] for r in records),
                "usd": round(sum(r["cost_usd"] or 0.0 for r in records), 6)}

    stages = {"author": read_jsonl(out.author), "check": read_jsonl(out.check)}
    stages.update({f"judge round {k}": read_jsonl(out.round(k).judge) for k in range(1, rounds + 1)})
    stages["judge, superseded"] = [r for path in sorted(out.superseded.glob("*")) for r in read_jsonl(GrowRound(path).judge)]
    costs = {name: total(records) for name, records in stages.items() if records}
    costs["total"] = total([r for records in stages.values() for r in records])
    return costs


def format_summary(summary: dict, out: Grow) -> str:
    costs, why = summary["ledger"], {"rounds": "after the last round", "budget": "at the teacher's budget",
                                      "gain": "when a round's student stopped gaining on the judged dev rows"}
    lines = [f"grow: stopped {why[summary['stopped']]}; the last student learned from {summary['train_rows']} rows "
             f"({summary['sources']['author']} authored, {summary['sources']['judge']} judged) -> {summary['student']}",
             f"{'stage':<16} {'rows':>6} {'requests':>9} {'prompt tok':>11} {'answer tok':>11} {'USD':>9}"]
    for name, c in costs.items():
        lines.append(f"{name:<16} {c['rows']:>6} {c['requests']:>9} {c['prompt_tokens']:>11} "
                     f"{c['completion_tokens']:>11} {c['usd']:>9.4f}")
    lines.append(f"grow: {out.summary}, {out.ledger}, {out.judgments}, {out.synthetic}"
                 + ("  (simulated teacher)" if summary["simulated"] else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(grow, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
