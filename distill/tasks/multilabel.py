"""Zero or more labels per text from a fixed set (topics, intents, content policies).

A label is the list of labels that apply, in the label set's order, each once; [] when none does.
The teacher answers {"labels": [...]}, each item matched like a single label (case, aliases, the
closest label within a few edits); the student writes "a; b" (or "none"), or an encoder gives a
sigmoid per label. Metrics: micro and macro F1 with per-label P/R/F1, subset accuracy (every
label of the text right) and Hamming loss (the share of wrong label decisions).
"""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pyarrow as pa

from distill.errors import DataError, OutputError
from distill.tasks.base import (
    Task,
    choices_config,
    choices_result,
    norm,
    span_probability,
    token_offsets,
)
from distill.tasks.noise import planned_mistakes, ranks, unit_random

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_SEPARATORS = re.compile(r"[;|]")


class Multilabel(Task):
    kind = "multilabel"
    answer_prefix = "Labels:"
    main_metric = "f1"  # micro F1 over label decisions
    accuracy_name = "subset accuracy"  # the text's whole label set right
    f1_key = "f1"
    headline = ("f1", "macro_f1", "subset_accuracy", "hamming_loss")
    multi_label = True

    def label_type(self) -> pa.DataType:
        return pa.list_(pa.string())

    def _canonical(self, labels) -> list[str]:
        """Each label once, in the label set's order."""
        chosen = set(labels)
        return [label for label in self.labels if label in chosen]

    # -- teacher ------------------------------------------------------------------------------
    def instructions(self, compact: bool = False, choice: bool = False) -> str:
        answer = '{"labels": ["<label>", ...]}'
        if compact:  # small models lose the task in long prompts: labels and one instruction
            return (f"Tag the text with every label that applies. Labels: {', '.join(self.labels)}.\n"
                    f"Reply with JSON only: {answer}, [] if none applies.")
        parts = ["You tag texts. Read the text and choose every label that applies from this set: "
                 + ", ".join(self.labels) + ".",
                 (f"Reply with a JSON object only: {answer}, each label exactly as written above; an empty "
                  "list when no label applies.")]
        if self.guidelines:
            parts.insert(1, "Guidelines:\n" + self.guidelines)
        return "\n\n".join(parts)

    def answer_schema(self) -> dict:
        return {"type": "object",
                "properties": {"labels": {"type": "array", "items": {"type": "string", "enum": self.labels}}},
                "required": ["labels"], "additionalProperties": False}

    def example_answer(self, example) -> dict:
        return {"labels": list(example["labels"])}

    def from_answer(self, answer, row: dict) -> list[str]:
        if isinstance(answer, dict):
            if "labels" not in answer:
                raise OutputError("missing_field", f"no 'labels' key in {str(answer)[:80]!r}")
            answer = answer["labels"]
        if isinstance(answer, str):  # one label given bare
            answer = [answer]
        if not isinstance(answer, list):
            raise OutputError("missing_field", f"'labels' is not a list: {str(answer)[:80]!r}")
        return self._canonical(self.normalize_label(item) for item in answer)

    def answer_tokens(self, row: dict) -> int:
        longest = sorted(self.labels, key=len)[-3:]  # about three labels per answer
        return len(json.dumps({"labels": longest})) // 4 + 2

    def confidence_spans(self, content: str) -> list[tuple[int, int]]:
        """One span per string inside the "labels" list."""
        start = content.find('"labels"')
        if start < 0:
            return []
        opening = content.find("[", start)
        closing = content.find("]", opening)
        if opening < 0 or closing < 0:
            return []
        return [m.span(1) for m in _STRING.finditer(content, opening, closing)]

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        """Whole-answer probability for the row; each label's own tokens for its confidence."""
        total = super().logprob_confidence(content, logprobs, label, row)[0]
        offsets = token_offsets(content, logprobs)
        if offsets is None:
            return total, None
        found = {}
        for start, end in self.confidence_spans(content):
            try:
                found.setdefault(self.normalize_label(json.loads(f'"{content[start:end]}"')),
                                 span_probability(offsets, start, end))
            except (OutputError, ValueError):
                continue
        return total, [round(found[k], 6) if k in found else None for k in label]

    def vote(self, labels: list, n: int, row: dict):
        """Per label: kept when more than half of the n samples give it."""
        counts = Counter(k for sample in labels for k in sample)
        kept = self._canonical(k for k, c in counts.items() if c > n / 2)
        return kept, sum(s == kept for s in labels) / n, [counts[k] / n for k in kept]

    # -- the simulated teacher ------------------------------------------------------------------
    def noise_plan(self, groups: dict[str, list[dict]], sim) -> dict:
        """Realistic noise per label decision: a weak one-vs-rest text classifier (TF-IDF +
        logistic regression, out of fold) scores every label of every row. Gold labels it scores
        low are the likeliest to be missed, and each row's highest-scored wrong label is the
        likeliest to be added (hardness ranked within each kind, so both kinds err alike);
        `accuracy` is the share of those decisions the teacher gets right."""
        rows = [r for group in groups.values() for r in group]
        texts = [self.user_message(r) for r in rows]
        probs = weak_multilabel_probabilities(texts, [r["label"] for r in rows], self.labels, sim.get("seed", 0))
        plan, first = {}, 0
        for name, group in groups.items():  # each group (gold, seed pool) gets the accuracy exactly
            units = []  # (row number, label or None for the intruder, difficulty)
            for i, r in enumerate(group, start=first):
                gold = set(r["label"])
                for k, label in enumerate(self.labels):
                    if label in gold:  # as hard to keep as the weak model is unsure of it
                        units.append((i, label, 1.0 - probs[i, k]))
                others = [(probs[i, k], label) for k, label in enumerate(self.labels) if label not in gold]
                if others:  # as hard to leave out as the weak model is sure of it
                    p, intruder = max(others)
                    units.append((i, ("+", intruder), p))
            first += len(group)
            keys = [f"{texts[i]}\x00{label}" for i, label, _ in units]
            # hardness ranked within each kind of decision, so misses and additions share the mistakes
            kinds = np.array([isinstance(label, tuple) for _, label, _ in units])
            hard = np.array([d for *_, d in units], dtype=float)
            for kind in (True, False):
                hard[kinds == kind] = 1.0 - ranks(hard[kinds == kind])
            p, wrong = planned_mistakes(hard, keys, sim, name)
            for (i, label, _), p_i, w in zip(units, p, wrong):
                entry = plan.setdefault(texts[i], {"gold": {}, "intruder": None})
                if isinstance(label, tuple):
                    entry["intruder"] = {"label": label[1], "p": float(p_i), "wrong": bool(w)}
                else:
                    entry["gold"][label] = {"p": float(p_i), "wrong": bool(w)}
        return plan

    def simulate(self, gold: list[str], row: dict, rng, sim, plan: dict | None = None,
                 resample: bool = False) -> tuple[dict, bool, list[bool]]:
        """Each gold label is kept or missed, and a wrong label may be added: as planned under
        realistic noise (a further sample errs at each decision's own chance), else each decision
        right with probability `accuracy` and an added label a confusion or a random other.
        Returns (answer, whole answer right, rightness of each answered label)."""
        def errs(unit) -> bool:
            if plan is None:
                return rng.random() >= sim["accuracy"]
            return rng.random() < unit["p"] if resample else unit["wrong"]

        answer = [k for k in gold if not errs(plan["gold"][k] if plan else None)]
        intruder = None
        if plan is not None and plan["intruder"] is not None:
            intruder = plan["intruder"]["label"] if errs(plan["intruder"]) else None
        elif plan is None and len(gold) < len(self.labels) and errs(None):
            confused = [c for k in gold for c in _as_list((sim.get("confusions") or {}).get(k)) if c not in gold]
            intruder = rng.choice(confused or [k for k in self.labels if k not in gold])
        if intruder is not None:
            answer.append(intruder)
        answer = self._canonical(answer)
        return {"labels": answer}, answer == list(gold), [k in gold for k in answer]

    # -- students -------------------------------------------------------------------------------
    def student_target(self, label: list[str], row: dict) -> str:
        return "; ".join(label) if label else "none"

    def parse_student(self, text: str, row: dict) -> list[str]:
        text = text.strip()
        if norm(text) in ("none", ""):
            return []
        return self._canonical(self.normalize_label(part.strip()) for part in text.split(";") if part.strip())

    def student_unit_confidence(self, text: str, pieces: list, label: list[str], row: dict):
        """Each generated label's confidence: the probability of the tokens that wrote it."""
        offsets = token_offsets(text, pieces)
        if offsets is None:
            return None
        found, pos = {}, 0
        for part in text.split(";"):
            try:
                found.setdefault(self.normalize_label(part.strip()), span_probability(offsets, pos, pos + len(part)))
            except OutputError:
                pass
            pos += len(part) + 1
        return [round(found[k], 6) if k in found else None for k in label]

    def to_class_ids(self, label: list[str], row: dict) -> list[float]:
        chosen = set(label)
        return [1.0 if k in chosen else 0.0 for k in self.labels]

    def from_class_ids(self, ids: list, row: dict) -> list[str]:
        return [k for k, on in zip(self.labels, ids) if on]

    # -- gold and scoring -----------------------------------------------------------------------
    def check_gold(self, value, where: str, row: dict | None = None) -> list[str]:
        """A list of labels, or one string of them separated by ';' or '|'; empty means none."""
        if value is None:
            value = []
        if isinstance(value, str):
            value = [part for part in _SEPARATORS.split(value) if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: multi-label labels must be a list of labels (or one string of them "
                            f"separated by ';'), got {value!r}")
        out = []
        for item in value:
            try:
                out.append(self.normalize_label(str(item)))
            except OutputError:
                raise DataError(f"{where}: label {item!r} is not in the label set {self.labels}") from None
        return self._canonical(out)

    def counts(self, gold: list[list[str]], pred: list[list[str] | None]) -> np.ndarray:
        index = {label: k for k, label in enumerate(self.labels)}
        out = np.zeros((len(gold), len(self.labels), 3), dtype=np.int64)
        for i, (g, p) in enumerate(zip(gold, pred)):
            for k in g:
                out[i, index[k], 2] = 1
            for k in p or []:
                out[i, index[k], 1] = 1
                out[i, index[k], 0] = int(k in g)
        return out

    def metrics(self, gold: list, pred: list) -> dict:
        m = super().metrics(gold, pred)
        sums = self.counts(gold, pred).sum((0, 1))
        wrong = sums[1] + sums[2] - 2 * sums[0]  # false positives + false negatives
        return {**m, "micro_f1": m["f1"], "subset_accuracy": m["accuracy"],
                "hamming_loss": float(wrong / max(1, len(gold) * len(self.labels)))}

    def label_counts(self, labels: list[list[str] | None]) -> np.ndarray:
        counts = Counter(k for label in labels if label for k in label)
        return np.array([counts.get(k, 0) for k in self.labels], dtype=np.int64)

    def cardinality(self, labels: list[list[str] | None]) -> np.ndarray:
        """Labels per text."""
        return np.array([len(label) for label in labels if label is not None], dtype=np.int64)

    def majority(self, gold: list[list[str]]) -> list[list[str]]:
        # the most common label set
        top = Counter(json.dumps(g) for g in gold).most_common(1)[0][0]
        return [json.loads(top) for _ in gold]

    # -- review files ---------------------------------------------------------------------------
    def label_studio_config(self) -> str:
        return choices_config(self.labels, multiple=True)

    def review_prediction(self, row: dict) -> tuple[list[dict], list[str]]:
        return choices_result(list(row["label"] or [])), list(row["label"] or [])

    def argilla_question(self) -> dict:
        return {"name": "label", "type": "multi_label_selection", "labels": self.labels}


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def weak_multilabel_probabilities(texts: list[str], label_sets: list[list[str]], classes: list[str],
                                  seed: int = 0, folds: int = 5) -> np.ndarray:
    """Out-of-fold probability of each label for each text from a weak one-vs-rest classifier
    (TF-IDF + logistic regression per label), each row scored by models fitted on the other
    folds. [rows, classes]"""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    n = len(texts)
    y = np.array([[k in set(s) for k in classes] for s in label_sets], dtype=int).reshape(n, len(classes))
    out = np.tile(y.mean(0), (n, 1)).astype(float)  # a label's base rate where no model can be fitted
    fold = np.array([int(unit_random(seed, "fold", t) * folds) for t in texts])
    for f in range(folds):
        test, fit = fold == f, fold != f
        if not test.any() or fit.sum() < 2:
            continue
        vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2)
        x_fit = vectorizer.fit_transform([texts[i] for i in np.flatnonzero(fit)])
        x_test = vectorizer.transform([texts[i] for i in np.flatnonzero(test)])
        for k in range(len(classes)):
            if len(set(y[fit, k])) < 2:
                out[test, k] = y[fit, k].mean()
                continue
            model = LogisticRegression(max_iter=1000, C=1.0).fit(x_fit, y[fit, k])
            out[test, k] = model.predict_proba(x_test)[:, 1]
    return out
