"""Bad input: one clear message naming file, row and field; exit status 2 from the CLI."""

import json
import subprocess
import sys

import pytest

from distill.data import load_split, read_conll, read_jsonl
from distill.errors import ConfigError, DataError
from distill.tasks import build_task
from distill.teach import teach


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    seed = write_jsonl(tmp_path / "seed.jsonl", [{"text": f"the Rovers won match {i}", "label": "sports"} for i in range(20)])
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"text": f"rain in Oslo on day {i}", "label": "weather"}
                                                 for i in range(10)])
    return seed, gold


def cfg_with(make_cfg, seed, gold, *extra):
    return make_cfg("demo", "data.demo=null", f"data.seed.path={seed}", f"data.corpus.path={seed}",
                    f"data.gold.path={gold}", "data.seed.label_column=null", *extra)


def test_reads_jsonl_csv_parquet_with_stable_ids(make_cfg, tmp_path, files):
    seed, gold = files
    import pandas as pd

    frame = pd.read_json(seed, lines=True)
    frame.to_csv(tmp_path / "seed.csv", index=False)
    frame.to_parquet(tmp_path / "seed.parquet")
    ids = None
    for path in (seed, tmp_path / "seed.csv", tmp_path / "seed.parquet"):
        cfg = cfg_with(make_cfg, path, gold)
        ds = load_split(cfg, "seed", build_task(cfg.task))
        assert len(ds) == 20 and set(ds.column_names) == {"id", "text"}
        ids = ids or ds["id"]
        assert ds["id"] == ids  # a content hash: the same whatever the file format
    assert len(set(ids)) == 20


def test_csv_values_are_read_as_written(make_cfg, tmp_path, files):
    _, gold = files
    (tmp_path / "seed.csv").write_text("text\n007\n1.50\n")  # numbers to a type-guessing reader
    cfg = cfg_with(make_cfg, tmp_path / "seed.csv", gold)
    assert load_split(cfg, "seed", build_task(cfg.task))["text"] == ["007", "1.50"]


def test_missing_file(make_cfg, files, tmp_path):
    cfg = cfg_with(make_cfg, tmp_path / "nope.jsonl", files[1])
    with pytest.raises(DataError, match=r"seed data: file .*nope.jsonl does not exist"):
        teach(cfg)


def test_missing_column_lists_columns(make_cfg, files):
    cfg = cfg_with(make_cfg, *files, "data.seed.text_column=body")
    with pytest.raises(DataError, match=r"seed.jsonl: no column 'body' .*columns are: text"):
        teach(cfg)


def test_empty_text_names_the_row(make_cfg, tmp_path, files):
    seed = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"text": "  "}])
    cfg = cfg_with(make_cfg, seed, files[1])
    with pytest.raises(DataError, match=r"bad.jsonl row 2: field 'text' is empty"):
        teach(cfg)


def test_label_outside_the_schema(make_cfg, tmp_path, files):
    gold = write_jsonl(tmp_path / "gold2.jsonl", [{"text": "a", "label": "sports"}, {"text": "b", "label": "cooking"}])
    cfg = cfg_with(make_cfg, files[0], gold)
    with pytest.raises(DataError, match=r"gold2.jsonl row 2 field 'label': label 'cooking' is not in the label set"):
        teach(cfg)


def test_gold_overlapping_seed_pool_is_refused(make_cfg, tmp_path, files):
    seed, _ = files
    gold = write_jsonl(tmp_path / "leaky.jsonl", [{"text": "the Rovers won match 3", "label": "sports"},
                                                  {"text": "the  Rovers won match 7", "label": "sports"},
                                                  {"text": "new text", "label": "sports"}])
    cfg = cfg_with(make_cfg, seed, gold)
    with pytest.raises(DataError, match=r"2 gold rows also appear in the seed pool \(first: 'the Rovers won match 3'"):
        teach(cfg)
    assert not (tmp_path / "run" / "teacher" / "seed.jsonl").exists()  # nothing spent


def test_drop_gold_overlap_leaves_out_seed_rows_also_in_gold(make_cfg, tmp_path, files, capsys):
    seed, _ = files
    gold = write_jsonl(tmp_path / "leaky.jsonl", [{"text": "the Rovers won match 3", "label": "sports"},
                                                  {"text": "the  Rovers won match 7", "label": "sports"},
                                                  {"text": "new text", "label": "sports"}])
    cfg = cfg_with(make_cfg, seed, gold, "data.drop_gold_overlap=true", "data.seed.label_column=label")  # the simulator answers from it
    rows = load_split(cfg, "seed", build_task(cfg.task))
    assert len(rows) == 18 and not {"the Rovers won match 3", "the Rovers won match 7"} & set(rows["text"])
    assert "seed data: 2 rows of" in capsys.readouterr().out
    teach(cfg)  # held out now: the teacher labels the rest
    assert len(read_jsonl(tmp_path / "run" / "teacher" / "seed.jsonl")) == 18


def test_topic_recipe_reads_the_ag_news_csv_layout(make_cfg, tmp_path):
    (tmp_path / "ag_news_csv").mkdir()
    (tmp_path / "alps_agnews").mkdir()
    (tmp_path / "ag_news_csv" / "test.csv").write_text(
        '"3","Oil up","Crude prices rose, traders said ""sharply"" on Monday."\n'
        '"2","Cup final","The Rovers won the cup final 2-1."\n'
        '"4","Probe lands","A space probe landed on a comet."\n')
    (tmp_path / "alps_agnews" / "dev.tsv").write_text(
        "".join(f"Story {i} about the markets.\tBusiness\n" for i in range(20))
        + "The Rovers won the cup final 2-1.\tSports\n")  # also a test description
    cfg = make_cfg("topic", f"data.dir={tmp_path}")
    task = build_task(cfg.task)
    gold = load_split(cfg, "gold", task, labels=True)
    assert gold["label"] == ["Business", "Sports", "Sci/Tech"]  # class indices 1-4 mapped to names
    assert gold["text"][0] == 'Crude prices rose, traders said "sharply" on Monday.'
    seed, corpus = load_split(cfg, "seed", task, labels=True), load_split(cfg, "corpus", task)
    assert len(seed) + len(corpus) == 20 and set(seed["label"]) == {"Business"}


def test_conll_reader(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
                    "Blackburn NNP I-NP I-PER\n")
    ds = read_conll(path)
    assert ds["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ds["tags"] == [["I-ORG", "O"], ["B-PER", "I-PER"]]  # as written: the NER task converts IOB1


def test_cli_reports_bad_input_with_exit_status_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "distill", "teach", "recipe=demo", f"run_dir={tmp_path}/r",
                           "data.demo=null", f"data.seed.path={tmp_path}/missing.jsonl"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "missing.jsonl does not exist" in proc.stderr and "Traceback" not in proc.stderr
    # the other cases run in-process: tests/test_bad_inputs.py


def test_one_file_cut_into_disjoint_splits_by_text_hash(make_cfg, tmp_path):
    texts = [f"message number {i} about {'prizes' if i % 5 == 0 else 'dinner'}" for i in range(300)]
    lines = [f"{'spam' if i % 5 == 0 else 'ham'}\t{t}" for i, t in enumerate(texts)]
    lines += lines[:40]  # repeated messages, as in the SMS collection
    (tmp_path / "sms.tsv").write_text("\n".join(lines) + "\n")
    cfg = make_cfg("spam", f"data.file={tmp_path / 'sms.tsv'}")
    task = build_task(cfg.task)
    splits = {s: load_split(cfg, s, task, labels=s != "corpus") for s in ("seed", "corpus", "gold")}
    assert sum(len(d) for d in splits.values()) == 340  # every line lands in exactly one split
    sets = {s: set(d["text"]) for s, d in splits.items()}
    assert not sets["seed"] & sets["gold"] and not sets["corpus"] & sets["gold"] and not sets["seed"] & sets["corpus"]
    assert 0.4 < len(sets["seed"]) / 300 < 0.6 and 0.1 < len(sets["gold"]) / 300 < 0.3
    assert set(splits["gold"]["label"]) == {"ham", "spam"}
    with pytest.raises(ConfigError, match=r"data.gold.slice must be \[lo, hi\]"):  # as the recipe loads
        make_cfg("spam", f"data.file={tmp_path / 'sms.tsv'}", "data.gold.slice=[0.5,0.2]")
