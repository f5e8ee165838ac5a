import json
import math
import random

import pytest
from omegaconf import OmegaConf

from distill.data import load_split
from distill.tasks.ner import iob2
from distill.errors import DataError, OutputError
from distill.tasks import build_task
from distill.tasks.ner import spans


@pytest.fixture
def clf():
    return build_task(OmegaConf.create({"kind": "classification", "labels": ["ham", "spam"],
                                        "aliases": {"junk": "spam"}, "guidelines": "spam sells things"}))


@pytest.fixture
def ner():
    return build_task(OmegaConf.create({"kind": "ner", "labels": ["PER", "ORG", "LOC"],
                                        "aliases": {"PERSON": "PER"}}))


ROW = {"id": "1", "text": "win a prize now"}


@pytest.mark.parametrize("reply", [
    '{"label": "spam"}', '{"label": " SPAM "}', '{"label": "junk"}',
    'Sure! Here is the answer: {"label": "Spam"} Hope it helps.', '```json\n{"label": "spam"}\n```',
])
def test_classification_round_trip(clf, reply):
    label = clf.parse_teacher(reply, ROW)
    assert label == "spam"
    target = clf.student_target(label, ROW)
    assert clf.parse_student(target, ROW) == "spam"


@pytest.mark.parametrize("reply,kind", [
    ('{"label": "spa', "invalid_json"), ("no json here", "invalid_json"), ("", "empty_output"),
    (None, "empty_output"), ('{"answer": "spam"}', "missing_field"), ('{"label": "eggs"}', "label_not_in_schema"),
])
def test_classification_malformed_output_has_error_type(clf, reply, kind):
    with pytest.raises(OutputError) as e:
        clf.parse_teacher(reply, ROW)
    assert e.value.kind == kind
    with pytest.raises(OutputError):
        clf.parse_student("eggs", ROW)


def test_prompt_carries_labels_guidelines_and_schema(clf):
    msgs = clf.messages(ROW)
    assert msgs[0]["role"] == "system" and "ham, spam" in msgs[0]["content"]
    assert "spam sells things" in msgs[0]["content"]
    assert msgs[-1] == {"role": "user", "content": ROW["text"]}
    assert clf.response_format()["json_schema"]["schema"]["properties"]["label"]["enum"] == ["ham", "spam"]


def test_classification_metrics_by_hand(clf):
    gold = ["ham", "ham", "spam", "spam"]
    pred = ["ham", "spam", "spam", None]
    m = clf.metrics(gold, pred)
    assert m["accuracy"] == 0.5 and m["invalid"] == 1
    assert m["per_class"]["spam"]["precision"] == 0.5 and m["per_class"]["spam"]["recall"] == 0.5
    assert m["per_class"]["ham"]["precision"] == 1.0 and m["per_class"]["ham"]["recall"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)


NER_ROW = {"id": "2", "tokens": "Peter Blackburn visited New York with Peter .".split()}
NER_ROW["text"] = " ".join(NER_ROW["tokens"])


def test_ner_round_trip(ner):
    reply = json.dumps({"entities": [{"text": "Peter Blackburn", "type": "person"},
                                     {"text": "New York", "type": "LOC"}, {"text": "Peter", "type": "PER"}]})
    tags = ner.parse_teacher(reply, NER_ROW)
    assert tags == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-PER", "O"]
    target = ner.student_target(tags, NER_ROW)
    assert target == "PER: Peter Blackburn; LOC: New York; PER: Peter"
    assert ner.parse_student(target, NER_ROW) == tags
    assert ner.parse_student("none", NER_ROW) == ["O"] * 8


def test_ner_malformed_output(ner):
    for reply, kind in [('{"entities": [{"text": "Peter"}]}', "missing_field"),
                        ('{"entities": "Peter"}', "missing_field"),
                        ('{"entities": [{"text": "Peter", "type": "ANIMAL"}]}', "label_not_in_schema"),
                        ('{"entities": [', "invalid_json")]:
        with pytest.raises(OutputError) as e:
            ner.parse_teacher(reply, NER_ROW)
        assert e.value.kind == kind
    with pytest.raises(OutputError) as e:
        ner.parse_student("PER Peter", NER_ROW)
    assert e.value.kind == "unparseable"
    # an entity that is not in the text is dropped, the rest kept
    tags = ner.parse_teacher('{"entities": [{"text": "Paris", "type": "LOC"}, {"text": "New York", "type": "LOC"}]}', NER_ROW)
    assert tags == ["O", "O", "O", "B-LOC", "I-LOC", "O", "O", "O"]


def test_strict_iob2_spans_and_iob1_conversion():
    assert spans(["B-PER", "I-PER", "I-ORG", "O", "I-LOC", "B-LOC"]) == [("PER", 0, 2), ("LOC", 5, 6)]
    assert iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]


def test_ner_entity_metrics_by_hand(ner):
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # boundary error on the person
    m = ner.metrics(gold, pred)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["per_class"]["PER"]["f1"] == 0.0 and m["per_class"]["LOC"]["f1"] == 1.0


def test_ner_metric_matches_seqeval_strict_iob2(ner):
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(0)
    tags = ["O", *(f"{p}-{t}" for t in ("PER", "ORG", "LOC") for p in "BI")]
    gold, pred = [], []
    for _ in range(400):
        g = iob2(rng.choices(tags, weights=[6, 1, 1, 1, 1, 1, 1], k=rng.randint(1, 12)))  # valid IOB2
        gold.append(g)  # predictions: gold with tags swapped at random, stray I- (no entity in strict mode) too
        pred.append([rng.choice(tags) if rng.random() < 0.3 else t for t in g])
    strict = {"mode": "strict", "scheme": IOB2}
    assert f1_score(gold, pred) != pytest.approx(f1_score(gold, pred, **strict), abs=1e-3)  # the strays count
    m = ner.metrics(gold, pred)
    assert m["precision"] == pytest.approx(precision_score(gold, pred, **strict), abs=1e-9)
    assert m["recall"] == pytest.approx(recall_score(gold, pred, **strict), abs=1e-9)
    assert m["f1"] == pytest.approx(f1_score(gold, pred, **strict), abs=1e-9)
    report = classification_report(gold, pred, output_dict=True, **strict)
    assert m["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-9)
    for typ, ours in m["per_class"].items():
        assert ours["precision"] == pytest.approx(report[typ]["precision"], abs=1e-9), typ
        assert ours["recall"] == pytest.approx(report[typ]["recall"], abs=1e-9), typ
        assert ours["f1"] == pytest.approx(report[typ]["f1-score"], abs=1e-9), typ
        assert ours["support"] == report[typ]["support"], typ


def test_simulated_noise_hits_target_accuracy(clf, ner):
    sim = {"accuracy": 0.8, "confusions": {"ham": "spam"}}
    rng = random.Random(0)
    right = sum(clf.simulate("ham", ROW, rng, sim)[0]["label"] == "ham" for _ in range(2000))
    assert 0.77 < right / 2000 < 0.83
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-PER", "O"]
    pred = [ner.parse_teacher(json.dumps(ner.simulate(tags, NER_ROW, rng, sim)[0]), NER_ROW) for _ in range(500)]
    f1 = ner.metrics([tags] * 500, pred)["f1"]
    assert 0.7 < f1 < 0.9


def test_gold_label_checks(clf, ner):
    assert clf.check_gold("Junk", "f row 1") == "spam"
    with pytest.raises(DataError, match="f row 3: label 'eggs' is not in the label set"):
        clf.check_gold("eggs", "f row 3")
    with pytest.raises(DataError, match="tag 'B-ANIMAL'"):
        ner.check_gold(["O", "B-ANIMAL"], "f row 2", {"tokens": ["a", "b"]})


def test_ner_gold_in_iob1_becomes_iob2(ner):
    tags = ner.check_gold(["I-PER", "I-PER", "O", "I-LOC"], "f row 1", {"tokens": list("abcd")})
    assert tags == ["B-PER", "I-PER", "O", "B-LOC"] and len(spans(tags)) == 2
    assert ner.check_gold(["B-PER", "I-PER", "B-PER"], "f row 1", {"tokens": list("abc")}) == ["B-PER", "I-PER", "B-PER"]  # IOB2 kept


@pytest.mark.parametrize("tag", ["S-PER", "E-PER", "U-PER", "L-PER", "PER", ""])
def test_ner_gold_in_another_tag_scheme_is_refused(ner, tag):
    with pytest.raises(DataError, match=f"f row 4 field 'tags': tag '{tag}' .*IOB1 or IOB2"):
        ner.check_gold(["O", tag], "f row 4 field 'tags'", {"tokens": ["a", "b"]})


def test_ner_gold_jsonl_reads_iob1_as_iob2_and_refuses_bioes(make_cfg, tmp_path):
    def split(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = make_cfg("demo_ner", "data.demo=null", *(f"data.{s}.path={path}" for s in ("seed", "corpus", "gold")))
        return load_split(cfg, "gold", build_task(cfg.task), labels=True)

    rows = [{"tokens": "Ana Lee met Bo in Oslo".split(), "tags": ["I-PER", "I-PER", "O", "I-PER", "O", "I-LOC"]},
            {"tokens": "Acme hired Ana".split(), "tags": ["I-ORG", "O", "I-PER"]}]
    gold = split("iob1.jsonl", rows)
    assert gold["label"] == [["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    with pytest.raises(DataError, match=r"bioes.jsonl row 2 field 'tags': tag 'S-ORG' .*IOB1 or IOB2"):
        split("bioes.jsonl", [rows[0], {**rows[1], "tags": ["S-ORG", "O", "S-PER"]}])


def test_few_shot_examples_from_a_recipe_become_chat_turns():
    cfg = OmegaConf.create({"kind": "ner", "labels": ["PER", "ORG"], "examples": [
        {"text": "Ana joined Acme .", "entities": [{"text": "Ana", "type": "PER"}, {"text": "Acme", "type": "ORG"}]}]})
    msgs = build_task(cfg).messages(NER_ROW)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert json.loads(msgs[2]["content"]) == {"entities": [{"text": "Ana", "type": "PER"}, {"text": "Acme", "type": "ORG"}]}


@pytest.mark.parametrize("value,expected", [("spamm", "spam"), ("Hamm", "ham"), ("junkk", "spam"),
                                            ("sham", None), ("eggs", None), ("s", None)])
def test_closest_label_within_a_small_edit_distance(clf, value, expected):
    if expected is None:  # too far, or as close to two labels
        with pytest.raises(OutputError):
            clf.normalize_label(value)
    else:
        assert clf.normalize_label(value) == expected


def test_confidence_from_the_label_tokens_only(clf):
    content = '{"label": "spam"}'
    tokens = [['{"', -0.01], ["label", -0.02], ['":', 0.0], [' "', -0.1], ["sp", -0.2], ["am", -0.05], ['"}', -0.3]]
    conf, units = clf.logprob_confidence(content, tokens, "spam", ROW)
    assert conf == pytest.approx(math.exp(-0.25)) and units is None
    # tokens that do not spell the reply: fall back to the whole reply's probability
    conf, _ = clf.logprob_confidence(content, [["x", -0.5]], "spam", ROW)
    assert conf == pytest.approx(math.exp(-0.5))


def test_ner_confidence_per_entity_and_entity_vote(ner):
    content = json.dumps({"entities": [{"text": "Peter Blackburn", "type": "PER"}, {"text": "New York", "type": "LOC"}]})
    label = ner.parse_teacher(content, NER_ROW)
    second = content.index('{"text": "New')
    tokens = [[content[:second], -0.1], [content[second:second + 10], -0.7], [content[second + 10:], 0.0]]
    conf, per_entity = ner.logprob_confidence(content, tokens, label, NER_ROW)
    assert conf == pytest.approx(math.exp(-0.8))
    assert per_entity == [pytest.approx(math.exp(-0.1)), pytest.approx(math.exp(-0.7))]
    a = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "O"]
    b = ["B-PER", "I-PER", "O", "O", "O", "O", "B-PER", "O"]
    tags, agreement, per_entity = ner.vote([a, a, b], 3, NER_ROW)
    assert tags == a and agreement == pytest.approx(2 / 3) and per_entity == [1.0, pytest.approx(2 / 3)]
