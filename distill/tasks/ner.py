"""Typed entity spans over whitespace tokens; IOB2 tags in and out (gold may come in IOB1)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from functools import cached_property
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
from scipy.stats import norm as normal

from distill.errors import DataError, OutputError
from distill.tasks.base import Task, norm, span_probability, token_offsets
from distill.tasks.noise import planned_mistakes, unit_random

_OBJECT = re.compile(r"\{[^{}]*\}")


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Strict IOB2 entities as (type, start, end); an I- that opens an entity is not one."""
    out, start, typ = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and tag != f"I-{typ}":
            out.append((typ, start, i))
            start = None
        if tag.startswith("B-"):
            start, typ = i, tag[2:]
    return out


def iob2(tags: list[str]) -> list[str]:
    """IOB1 → IOB2: an I- that does not continue an entity of its type opens one."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (i == 0 or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


def to_tags(entities: list[tuple[str, int, int]], n: int) -> list[str]:
    tags = ["O"] * n
    for typ, start, end in entities:
        tags[start] = f"B-{typ}"
        for i in range(start + 1, end):
            tags[i] = f"I-{typ}"
    return tags


def align(entities: list[tuple[str, str]], tokens: list[str]) -> list[tuple[str, int, int]]:
    """Place (type, surface text) entities on the tokens, in order; unplaceable ones are dropped."""
    placed, taken, cursor = [], [False] * len(tokens), 0
    for typ, surface in entities:
        words = surface.split()
        if not words:
            continue
        n = len(words)
        starts = [*range(cursor, len(tokens) - n + 1), *range(0, min(cursor, len(tokens) - n + 1))]
        for s in starts:
            if tokens[s : s + n] == words and not any(taken[s : s + n]):
                placed.append((typ, s, s + n))
                taken[s : s + n] = [True] * n
                cursor = s + n
                break
    return sorted(placed, key=lambda e: e[1])


class NER(Task):
    kind = "ner"
    answer_prefix = "Entities:"
    main_metric = "f1"
    accuracy_name = "sentence exact match"  # every entity of the sentence right, and no other
    headline = ("precision", "recall", "f1", "macro_f1")

    # -- rows: a sentence as its tokens, labels as one IOB2 tag per token ------------------------
    def input_column(self, spec) -> str:
        return spec.get("tokens_column", "tokens")

    def read_input(self, value, where: str, column: str) -> dict:
        if not isinstance(value, list) or not value or not all(isinstance(t, str) and t.strip() for t in value):
            raise DataError(f"{where}: field {column!r} must be a non-empty list of tokens")
        return {"text": " ".join(value), "tokens": list(value)}

    def input_fields(self) -> dict[str, pa.DataType]:
        return {"tokens": pa.list_(pa.string())}

    def label_type(self) -> pa.DataType:
        return pa.list_(pa.string())

    def instructions(self, compact: bool = False, choice: bool = False) -> str:
        answer = '{"entities": [{"text": "<exact words from the text>", "type": "<entity type>"}]}'
        if compact:  # small models lose the task in long prompts: types and one instruction
            return f"Find the named entities. Types: {', '.join(self.labels)}.\nReply with JSON only: {answer}"
        parts = [
            "You find named entities in a text. Entity types: " + ", ".join(self.labels) + ".",
            f"Reply with a JSON object only: {answer}, "
            "entities in the order they appear; an empty list when there are none.",
        ]
        if self.guidelines:
            parts.insert(1, "Guidelines:\n" + self.guidelines)
        return "\n\n".join(parts)

    def answer_schema(self) -> dict:
        entity = {"type": "object", "properties": {"text": {"type": "string"},
                                                   "type": {"type": "string", "enum": self.labels}},
                  "required": ["text", "type"], "additionalProperties": False}
        return {"type": "object", "properties": {"entities": {"type": "array", "items": entity}},
                "required": ["entities"], "additionalProperties": False}

    def example_answer(self, example) -> dict:
        return {"entities": list(example["entities"])}

    def from_answer(self, answer, row: dict) -> list[str]:
        if isinstance(answer, dict):
            if "entities" not in answer:
                raise OutputError("missing_field", f"no 'entities' key in {str(answer)[:80]!r}")
            answer = answer["entities"]
        if not isinstance(answer, list):
            raise OutputError("missing_field", f"'entities' is not a list: {str(answer)[:80]!r}")
        found = []
        for ent in answer:
            if not isinstance(ent, dict) or "text" not in ent or "type" not in ent:
                raise OutputError("missing_field", f"entity {ent!r} lacks 'text' or 'type'")
            found.append((self.normalize_label(ent["type"]), str(ent["text"])))
        return to_tags(align(found, row["tokens"]), len(row["tokens"]))

    def answer_tokens(self, row: dict) -> int:
        return 8 + len(row["text"]) // 6  # about a third of the words end up inside entity objects

    def confidence_spans(self, content: str) -> list[tuple[int, int]]:
        """One span per entity object inside the "entities" list."""
        start = content.find('"entities"')
        return [m.span() for m in _OBJECT.finditer(content, start)] if start >= 0 else []

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        """Whole-answer probability for the row; each entity's own tokens for its confidence."""
        total = super().logprob_confidence(content, logprobs, label, row)[0]
        offsets = token_offsets(content, logprobs)
        if offsets is None:
            return total, None
        units = []
        for start, end in self.confidence_spans(content):
            try:
                ent = json.loads(content[start:end])
                units.append([norm(ent["type"]), norm(ent["text"]), span_probability(offsets, start, end)])
            except (ValueError, KeyError, TypeError):
                continue
        return total, self._per_entity(units, label, row)

    def _per_entity(self, units: list[list], label: list[str], row: dict) -> list[float | None]:
        """Each labeled entity's confidence, from the answer's (type, surface, probability) units."""
        per_entity = []
        for typ, s, e in spans(label):
            surface = norm(" ".join(row["tokens"][s:e]))
            match = next((u for u in units if u[0] == norm(typ) and u[1] == surface), None)
            per_entity.append(round(match[2], 6) if match else None)
            if match:
                units.remove(match)
        return per_entity

    def student_unit_confidence(self, text: str, pieces: list, label: list[str], row: dict):
        """Per-entity confidence of a generated 'TYPE: words; ...' answer: the probability of the
        tokens that wrote each entity."""
        offsets = token_offsets(text, pieces)
        if offsets is None:
            return None
        units, pos = [], 0
        for part in text.split(";"):
            typ, sep, surface = part.partition(":")
            if sep:
                units.append([norm(self.normalize_label(typ.strip())), norm(surface),
                              span_probability(offsets, pos, pos + len(part))])
            pos += len(part) + 1
        return self._per_entity(units, label, row)

    def vote(self, labels: list, n: int, row: dict):
        """Entity-level majority: an entity found by more than half the n samples is kept."""
        counts = Counter(e for tags in labels for e in spans(tags))
        kept = sorted((e for e, c in counts.items() if c > n / 2), key=lambda e: e[1])
        tags = to_tags(kept, len(row["tokens"]))
        return tags, sum(t == tags for t in labels) / n, [counts[e] / n for e in kept]

    ERROR_KINDS = {"missed": 1, "wrong_type": 1, "boundary": 1}  # relative weights; teacher.sim.ner_errors overrides
    # how a typical tagger confuses the CoNLL types (relative weights); teacher.sim.confusions overrides
    TYPICAL_CONFUSIONS = {"ORG": {"LOC": 5, "MISC": 3, "PER": 2}, "LOC": {"ORG": 6, "MISC": 3, "PER": 1},
                          "MISC": {"ORG": 4, "LOC": 4, "PER": 2}, "PER": {"ORG": 5, "LOC": 3, "MISC": 2}}

    def noise_plan(self, groups: dict[str, list[dict]], sim) -> dict:
        """Realistic noise per gold entity: rare, lower-case, long and MISC entities and those in
        all-caps headlines are the likeliest to go wrong. A wrong one is missed (mostly rare or
        lower-case ones), retyped the way taggers confuse types (ORG and LOC, MISC), or cut at a
        wrong boundary (mostly multi-word ones)."""
        seed = sim.get("seed", 0)
        weights = sim.get("ner_errors") or self.ERROR_KINDS
        seen = Counter(norm(" ".join(r["tokens"][s:e])) for group in groups.values() for r in group
                       for _, s, e in spans(r["label"]))
        plan = {}
        for name, group in groups.items():  # each group (gold, seed pool) gets the accuracy exactly
            units = []  # (message, entity number, type, start, end, row, features)
            for r in group:
                tokens, message = r["tokens"], self.user_message(r)
                headline = all(t.isupper() for t in tokens if t.isalpha()) and any(t.isalpha() for t in tokens)
                for k, (typ, s, e) in enumerate(spans(r["label"])):
                    features = {"rare": seen[norm(" ".join(tokens[s:e]))] <= 1, "lower": not tokens[s][:1].isupper(),
                                "long": e - s >= 3, "multi": e - s >= 2, "misc": typ == "MISC", "headline": headline}
                    units.append((message, k, typ, s, e, r, features))
            keys = [f"{m}\x00{k}" for m, k, *_ in units]
            # unobserved difficulty on top of the features, fixed per entity
            difficulty = [1.0 * f["rare"] + 1.5 * f["lower"] + 1.0 * f["long"] + 0.7 * f["misc"] + 0.5 * f["headline"]
                          + 0.7 * normal.ppf(0.001 + 0.998 * unit_random(seed, "hard", key))
                          for key, (*_, f) in zip(keys, units)]
            p, wrong = planned_mistakes(difficulty, keys, sim, name)
            for key, (message, k, typ, s, e, r, f), p_i, w in zip(keys, units, p, wrong):
                if len(plan.get(message, ())) > k:  # a repeated text: planned at its first copy
                    continue
                kinds = {"missed": weights.get("missed", 0) * (1 + 1.5 * f["lower"] + f["rare"] + 0.5 * f["long"]),
                         "wrong_type": weights.get("wrong_type", 0) * (1 + 0.5 * (typ in ("ORG", "LOC", "MISC"))),
                         "boundary": weights.get("boundary", 0) * (0.2 + 1.5 * f["multi"])}
                kind = _pick(kinds, unit_random(seed, "kind", key))
                plan.setdefault(message, []).append(
                    {"p": float(p_i), "wrong": bool(w),
                     "entity": self._mistake(kind, typ, s, e, r["tokens"], sim, unit_random(seed, "how", key))})
        return plan

    def _mistake(self, kind: str, typ: str, start: int, end: int, tokens: list[str], sim, u: float):
        """The wrong entity a realistic teacher answers instead of (typ, start, end); None if missed."""
        if kind == "wrong_type" and len(self.labels) > 1:
            given = (sim.get("confusions") or {}).get(typ) or self.TYPICAL_CONFUSIONS.get(typ) or {}
            given = {given: 1} if isinstance(given, str) else given if isinstance(given, dict) else dict.fromkeys(given, 1)
            options = {t: w for t, w in given.items() if t in self.labels and t != typ} or \
                dict.fromkeys([t for t in self.labels if t != typ], 1)
            return _pick(options, u), start, end
        if kind == "boundary":
            if end - start > 1:  # a multi-word name cut short, at the end more often than the start
                return (typ, start, end - 1) if u < 0.65 else (typ, start + 1, end)
            if end < len(tokens) and u < 0.5:  # one word: the next word swallowed
                return typ, start, end + 1
            if start > 0:
                return typ, start - 1, end
        return None

    def simulate(self, gold: list[str], row: dict, rng, sim, plan: list | None = None,
                 resample: bool = False) -> tuple[dict, bool, list[bool]]:
        """Teacher noise: each entity is kept, missed, retyped or mis-bounded; with a realistic
        `plan`, as planned (a further sample gets each entity wrong at its own chance).
        Returns (answer, whole answer right, rightness of each answered entity)."""
        tokens, out, exact, units = row["tokens"], [], True, []
        errors = sim.get("ner_errors") or self.ERROR_KINDS
        kinds, weights = list(errors), list(errors.values())
        for k, (typ, start, end) in enumerate(spans(gold)):
            if plan is not None:
                wrong = rng.random() < plan[k]["p"] if resample else plan[k]["wrong"]
            else:
                wrong = rng.random() >= sim["accuracy"]
            if not wrong:
                out.append({"text": " ".join(tokens[start:end]), "type": typ})
                units.append(True)
                continue
            exact = False
            if plan is not None:
                if plan[k]["entity"] is None:
                    continue
                typ, start, end = plan[k]["entity"]
            else:
                error = rng.choices(kinds, weights)[0]
                if error == "wrong_type" and len(self.labels) > 1:
                    typ = rng.choice([t for t in self.labels if t != typ])
                elif error == "boundary":
                    if end - start > 1 and rng.random() < 0.5:
                        end -= 1
                    elif end < len(tokens) and rng.random() < 0.5:
                        end += 1
                    elif start > 0:
                        start -= 1
                    else:
                        continue
                elif error == "missed":
                    continue
            out.append({"text": " ".join(tokens[start:end]), "type": typ})
            units.append(False)
        return {"entities": out}, exact, units

    def student_target(self, label: list[str], row: dict) -> str:
        ents = spans(label)
        if not ents:
            return "none"
        return "; ".join(f"{typ}: {' '.join(row['tokens'][s:e])}" for typ, s, e in ents)

    token_level = True

    def class_names(self) -> list[str]:
        return self._tags

    @cached_property
    def _tags(self) -> list[str]:
        return ["O", *(f"{p}-{t}" for t in self.labels for p in "BI")]

    @cached_property
    def _tag_ids(self) -> dict[str, int]:
        return {tag: i for i, tag in enumerate(self._tags)}

    def to_class_ids(self, label: list[str], row: dict) -> list[int]:
        return [self._tag_ids[tag] for tag in label]

    def from_class_ids(self, ids: list[int], row: dict) -> list[str]:
        return iob2([self._tags[i] for i in ids])  # a stray I- opens an entity rather than vanishing

    def parse_student(self, text: str, row: dict) -> list[str]:
        text = text.strip()
        found = []
        if norm(text) not in ("none", ""):
            for part in text.split(";"):
                typ, sep, surface = part.partition(":")
                if not sep:
                    raise OutputError("unparseable", f"entity {part.strip()!r} is not 'TYPE: words'")
                found.append((self.normalize_label(typ.strip()), surface.strip()))
        return to_tags(align(found, row["tokens"]), len(row["tokens"]))

    def check_gold(self, value, where: str, row: dict) -> list[str]:
        """Gold tags in IOB1 or IOB2, returned as IOB2: strict spans would drop IOB1's opening I-."""
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: NER labels must be a list of IOB1 or IOB2 tags, got {value!r}")
        for tag in value:
            if tag != "O" and not (isinstance(tag, str) and tag[:2] in ("B-", "I-")):
                raise DataError(f"{where}: tag {tag!r} is neither IOB1 nor IOB2; IOB1 or IOB2 tags (O, B-TYPE, "
                                "I-TYPE) are expected: convert BIOES, BILOU or bare types first")
            if tag != "O" and tag[2:] not in self.labels:
                raise DataError(f"{where}: tag {tag!r} is not O or B-/I- of the types {self.labels}")
        if len(value) != len(row["tokens"]):
            raise DataError(f"{where}: {len(value)} tags for {len(row['tokens'])} tokens")
        return iob2(list(value))

    f1_key = "f1"  # entity-level micro F1, the CoNLL headline

    def counts(self, gold: list[list[str]], pred: list[list[str] | None]) -> np.ndarray:
        index = {t: k for k, t in enumerate(self.labels)}
        out = np.zeros((len(gold), len(self.labels), 3), dtype=np.int64)
        for i, (g, p) in enumerate(zip(gold, pred)):
            gs, ps = set(spans(g)), set(spans(p or ["O"] * len(g)))
            for column, found in ((2, gs), (1, ps), (0, gs & ps)):
                for typ, *_ in found:
                    out[i, index[typ], column] += 1
        return out

    def cardinality(self, labels: list[list[str] | None]) -> np.ndarray:
        """Entities per sentence."""
        return np.array([len(spans(tags)) for tags in labels if tags is not None], dtype=np.int64)

    def word_unit_confidence(self, tags: list[str], word_logprobs) -> list[float]:
        """Each entity's confidence from a tagger's per-word log-probabilities: the geometric mean
        of its words' tag probabilities."""
        return [round(float(math.exp(sum(word_logprobs[s:e]) / (e - s))), 6) for _, s, e in spans(tags)]

    # -- review files ---------------------------------------------------------------------------
    def label_studio_config(self) -> str:
        tags = "".join(f"<Label value={quoteattr(t)}/>" for t in self.labels)
        return f'<View>\n  <Labels name="label" toName="text">{tags}</Labels>\n  <Text name="text" value="$text"/>\n</View>\n'

    def review_prediction(self, row: dict) -> tuple[list[dict], list[dict]]:
        offsets = _offsets(row["tokens"])
        ents = spans(row["label"]) if row["label"] else []
        confs = row.get("entity_confidence") or [None] * len(ents)
        result = [{"from_name": "label", "to_name": "text", "type": "labels", "score": c,
                   "value": {"start": offsets[s][0], "end": offsets[e - 1][1], "labels": [typ],
                             "text": " ".join(row["tokens"][s:e])}}
                  for (typ, s, e), c in zip(ents, confs)]
        return result, [{"start": offsets[s][0], "end": offsets[e - 1][1], "label": typ} for typ, s, e in ents]

    def argilla_question(self) -> dict:
        return {"name": "label", "type": "span", "field": "text", "labels": self.labels}

    def majority(self, gold: list[list[str]]) -> list[list[str]]:
        # the majority tag is O: a model that finds nothing
        return [["O"] * len(g) for g in gold]

    def label_counts(self, labels: list[list[str] | None]) -> np.ndarray:
        counts = Counter(typ for tags in labels if tags for typ, *_ in spans(tags))
        return np.array([counts.get(t, 0) for t in self.labels], dtype=np.int64)


def _offsets(tokens: list[str]) -> list[tuple[int, int]]:
    """Character span of each token in the text (tokens joined by single spaces)."""
    out, pos = [], 0
    for t in tokens:
        out.append((pos, pos + len(t)))
        pos += len(t) + 1
    return out


def _pick(weights: dict, u: float):
    """The key whose share of the total weight covers u in [0, 1)."""
    total, acc = sum(weights.values()) or 1.0, 0.0
    for key, w in weights.items():
        acc += w / total
        if u < acc:
            return key
    return key
