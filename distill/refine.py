"""Refine stage: a student that learns from the teacher's answers to the rows it is least sure of.

    distill refine recipe=NAME [refine.rounds=2] [refine.fraction=0.2] [refine.explore=0.2]

Routing pays the teacher for the most informative labels the job ever buys; refine trains on them.
Each round the current student labels the corpus, and `refine.fraction / refine.rounds` of the
corpus rows go to the teacher: the least sure ones not asked yet, and a random `refine.explore`
share of them from the rest (trained on deferred rows alone, a student sees a skewed sample). A new
student then trains on the teacher's seed labels and every answer so far, its dev and calibration
rows a split of those teacher labels, never gold, and labels the next round. Refine stops after
`refine.rounds`, when the teacher budget runs out, or when the student's agreement with the
teacher on the audit slice (a random `label.audit_fraction` of the corpus, answered first and never
trained on) gains less than `refine.min_gain` in a round.

The labels (refine/corpus.parquet): the teacher's answer for every row it answered, the last
student's elsewhere. The last student goes to student/. Every round writes the rows it picks
(round{k}/asked.jsonl) before it sends any, and its record (round{k}/round.json) last: a rerun
after a kill skips finished rounds and asks only what is unanswered, and the teacher's cache bills
no request twice. refine/ledger.json counts the rows and USD of every round: rows newly billed,
rows answered from the cache, and the answers used. labels/ (from `distill label`) is left as the
old student wrote it; refine prints the command that relabels it with the new student.
"""

if __name__ == "__main__":
    import pathlib
    import sys

    if not __package__:  # run as a file: import the installed package, not its modules as top-level names
        sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])
    from distill.runner import before_imports

    before_imports("refine", sys.argv[1:])  # help, or quiet libraries, before torch and tqdm are imported

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from distill.api import agreement, fit, predict
from distill.data import load_split, prepare_data, read_json, read_jsonl, write_atomic
from distill.route import audit_ids
from distill.rundir import RunDir, StudentDir, finish, resume
from distill.schema import check_labels, needs_group
from distill.tasks import build_task
from distill.teacher import open_teacher
from distill.teacher.client import answers_line, label_summary
from distill.teacher.simulator import sim_rows
from distill.train import teacher_labels, train


def refine(cfg) -> dict:
    run, r = RunDir(cfg.run_dir), cfg.refine
    out = run.refine
    task = build_task(cfg.task)
    needs_group(cfg, "refine")
    check_labels(cfg, "corpus")  # a simulated teacher needs the corpus labels: said before anything is paid

    # the corpus, and the first student (trained on the teacher's seed labels, teaching first if needed)
    prepare_data(cfg)
    corpus = list(load_split(cfg, "corpus", task, labels=False))
    by_id = {row["id"]: row for row in corpus}
    if not run.student_files.record.exists():
        train(cfg)
    seed = teacher_labels(run, task)
    rounds, quota = int(r.rounds), max(1, round(float(r.fraction) * len(corpus) / int(r.rounds)))

    with open_teacher(cfg.teacher, task, sim_rows(cfg, task) if cfg.teacher.simulated else ()) as teacher:
        # the audit slice: random, answered first, never trained on
        audited = audit_ids(by_id, float(cfg.label.audit_fraction), int(cfg.label.audit_max_rows),
                            int(cfg.label.audit_seed))
        out.dir.mkdir(parents=True, exist_ok=True)
        if audited:
            teacher.label([by_id[i] for i in audited], out.audit_slice, "teacher: audit slice")
            print(answers_line("refine audit slice", read_jsonl(out.audit_slice)))
        audit = {a["id"]: a["label"] for a in read_jsonl(out.audit_slice) if a["label"] is not None}
        if not audit:  # nothing to measure a round's gain on
            reason = (f"none of the {len(audited)} audit-slice rows has a usable teacher answer" if audited
                      else f"label.audit_fraction={cfg.label.audit_fraction} gives no audit slice")
            print(f"refine: warning: {reason}, so the stopping rule (refine.min_gain) is off: every round runs")

        records, student_dir, stopped, so_far = [], run.student, "rounds", set()  # so_far: rows asked
        why = f"all {rounds} rounds done (refine.rounds={rounds})"
        for k in range(1, rounds + 1):
            rd = out.round(k)
            done = resume(rd.dir, round_fingerprint(cfg, quota, so_far, audited, student_dir),
                          f"refine: round {k} was made from other rows or settings; doing it afresh",
                          record=rd.record)
            if done and done["stop"] is None:  # one that stopped (gain, budget) is looked at again
                print(f"refine: round {k} already done ({rd.dir})")
                records.append(done)
                so_far.update(read_ids(rd.asked))
                student_dir = rd.student
                continue

            # the current student labels the corpus; a round that gains too little on the audit slice stops
            preds = predict(cfg, task, student_dir, corpus, rd.predictions)
            gained = agreement(task, audit, preds)
            before = records[-1]["agreement_before"] if records else None
            if before is not None and gained is not None and gained - before < float(r.min_gain):
                stopped = "gain"
                why = (f"round {k - 1}'s student gained {gained - before:+.3f} in agreement with the teacher on the "
                       f"audit slice ({before:.3f} -> {gained:.3f}), less than refine.min_gain={r.min_gain}")
                finish(rd.record, {"round": k, "stop": "gain", "agreement_before": gained})
                break

            # the rows: picked once, written before any is sent, so a rerun asks the same ones
            if not rd.asked.exists():
                picked = pick(preds, so_far | set(audited), quota, float(r.explore), int(cfg.seed) + k)
                write_atomic(rd.asked, "".join(json.dumps({"id": i}) + "\n" for i in picked))
            asked = read_ids(rd.asked)
            this_round = set(asked)
            stats = teacher.label([by_id[i] for i in asked], out.answers, f"teacher: refine round {k}")

            # a new student on the seed labels and every answer so far
            so_far.update(asked)
            replies = read_jsonl(out.answers)
            answers = [a for a in replies if a["id"] in so_far and a["label"] is not None]
            rows = training_rows(seed, answers, task, by_id)
            write_atomic(rd.train_rows, "".join(json.dumps(row) + "\n" for row in rows))
            print(f"refine: round {k}: {len(asked)} rows asked, training on {len(rows)} ({len(seed)} seed labels, "
                  f"{len(answers)} answers)")
            meta = fit(cfg, rows, rd.student,
                       f"refine round {k} teacher labels ({len(seed)} seed + {len(answers)} corpus answers)")
            dev = f"{meta['dev_agreement']:.3f}" if meta.get("dev_agreement") is not None else "n/a"
            print(f"refine: round {k} student: agreement with the teacher on {meta['dev_rows']} dev rows {dev} "
                  f"(trained on {len(seed)} seed labels + {len(answers)} teacher answers to corpus rows)")
            shutil.rmtree(StudentDir(rd.student).checkpoints, ignore_errors=True)
            budget = stats.get("stopped") == "budget"
            record = finish(rd.record, {
                "round": k, "asked": len(asked), "answered": len(answers), "train_rows": len(rows),
                "agreement_before": gained, "stop": "budget" if budget else None,
                "ledger": label_summary([a for a in replies if a["id"] in this_round])})
            records.append(record)
            student_dir = rd.student
            if budget:
                stopped = "budget"
                why = f"the teacher budget ran out in round {k} (teacher.budget_usd={cfg.teacher.budget_usd})"
                break

    # the labels: the teacher's answers where it gave one, the last student's elsewhere
    final = predict(cfg, task, student_dir, corpus, out.final_predictions)
    answered = {a["id"]: a for a in read_jsonl(out.answers) if a["label"] is not None}
    write_labels(out.labels, corpus, final, answered, task)
    stale = None
    if student_dir != run.student:
        shutil.copytree(student_dir, run.student, dirs_exist_ok=True)
        if run.labels("corpus").exists() or run.label_shards("corpus").exists():
            stale = label_command(cfg)
    ledger = {"rounds": [{"round": rec["round"], **rec["ledger"]} for rec in records if "ledger" in rec],
              "audit": label_summary(read_jsonl(out.audit_slice))}
    parts = [*ledger["rounds"], ledger["audit"]]
    # rows billed now, rows answered from the cache (free: asked by an earlier run or stage), answers used
    ledger["total"] = {"rows": sum(x["rows"] for x in parts), "billed_rows": sum(x.get("billed", 0) for x in parts),
                       "cached_rows": sum(x.get("cached", 0) for x in parts),
                       "answers_used": sum(x["labeled"] for x in parts), "invalid": sum(x.get("invalid", 0) for x in parts),
                       "usd": round(sum(x["cost_usd"] for x in parts), 6)}
    write_atomic(out.ledger, json.dumps(ledger, indent=2))
    summary = {"rounds": len([rec for rec in records if "ledger" in rec]), "stopped": stopped,
               "teacher_rows": len(answered), "audit_rows": len(audit),
               "agreement": agreement(task, audit, final), "ledger": ledger, "labels": str(out.labels)}
    write_atomic(out.summary, json.dumps(summary, indent=2))
    agree = f"; agreement with the teacher on {len(audit)} audit rows {summary['agreement']:.3f}" \
        if summary["agreement"] is not None else ""
    total = ledger["total"]
    invalid = f"; {total['invalid']} answers invalid" if total["invalid"] else ""
    n = summary["rounds"]
    print(f"refine: {n} round{'s' * (n != 1)} trained; stopped because {why}")
    print(f"refine: {len(answered)} corpus rows labeled by the teacher; {total['answers_used']} teacher answers used "
          f"({total['billed_rows']} rows newly billed, ${total['usd']:.4f}; {total['cached_rows']} answered from the "
          f"cache{invalid}){agree} -> {out.labels}")
    if stale:
        print(f"refine: labels/ still holds the old student's labels; `{stale}` relabels the corpus with the new student")
    return summary


def label_command(cfg) -> str:
    """The command that relabels the corpus with the run's (new) student."""
    run_dir = "" if str(cfg.run_dir) == f"runs/{cfg.recipe}" else f" run_dir={cfg.run_dir}"
    return f"distill label recipe={cfg.recipe}{run_dir}"


def round_fingerprint(cfg, quota: int, so_far: set, audited: list[str], student_dir: Path) -> dict:
    """What a round's picks and student depend on: the rows asked before it, the student that
    picks them, and the settings of picking and training."""
    before = hashlib.sha256(json.dumps(sorted(so_far)).encode()).hexdigest()[:16]
    return {"asked_before": before, "audit": hashlib.sha256(json.dumps(audited).encode()).hexdigest()[:16],
            "student": read_json(StudentDir(student_dir).record).get("adapter_hash"), "quota": quota,
            "explore": float(cfg.refine.explore), "seed": int(cfg.seed),
            **{key: OmegaConf.to_container(cfg[key]) for key in ("student", "train", "task")}}


def pick(preds: dict, taken: set, quota: int, explore: float, seed: int) -> list[str]:
    """`quota` rows not in `taken`: the least sure (invalid first), and an `explore` share drawn at
    random from the rest."""
    free = sorted((i for i in preds if i not in taken), key=lambda i: (sure(preds[i]), i))
    n_random = round(quota * explore)
    least = free[: max(0, quota - n_random)]
    rest = free[len(least):]
    rng = np.random.default_rng(seed)
    drawn = [rest[j] for j in sorted(rng.choice(len(rest), size=min(n_random, len(rest)), replace=False))]
    return least + drawn


def sure(pred: dict) -> float:
    return -1.0 if pred["label"] is None or pred["confidence"] is None else float(pred["confidence"])


def read_ids(path: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(path)]


def training_rows(seed: list[dict], answers: list[dict], task, corpus: dict) -> list[dict]:
    """The teacher's seed labels, then its answers to corpus rows (a text in both counts once)."""
    rows, seen = [], set()
    for row in [*seed, *answers]:
        if row["id"] not in seen:
            seen.add(row["id"])
            source = {**corpus.get(row["id"], {}), **row}  # a corpus row's input fields (NER: tokens)
            rows.append({k: source[k] for k in ("id", "text", *task.input_fields(), "label")})
    return rows


def write_labels(path: Path, corpus: list[dict], preds: dict, answered: dict, task) -> None:
    rows = []
    for row in corpus:
        p, a = preds[row["id"]], answered.get(row["id"])
        rows.append({"id": row["id"], "text": row["text"], "label": a["label"] if a else p["label"],
                     "confidence": a["confidence"] if a else p["confidence"], "route": "teacher" if a else "student",
                     "student_label": p["label"], "student_confidence": p["confidence"]})
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("label", task.label_type()),
                        ("confidence", pa.float64()), ("route", pa.string()), ("student_label", task.label_type()),
                        ("student_confidence", pa.float64())])
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    from distill.runner import run_stage

    run_stage(refine, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
