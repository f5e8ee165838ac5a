"""One label per text from a fixed set."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import cached_property

import numpy as np
import pyarrow as pa

from distill.errors import DataError, OutputError
from distill.tasks.base import Task, choices_config, choices_result, norm, span_probability, token_offsets
from distill.tasks.noise import planned_mistakes, weak_model_probabilities

# where the full and the compact prompt list the labels (a shortlist's, or all)
FROM, LABELS = "from this set: ", "Labels: "
_LABEL_VALUE = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')


class Classification(Task):
    kind = "classification"
    answer_prefix = "Label:"
    main_metric = "accuracy"
    headline = ("accuracy", "macro_f1")

    clean_methods = ("confidence", "cleanlab")

    def label_type(self) -> pa.DataType:
        return pa.string()

    choice_answers = True
    shortlists = True
    grows = True

    def instructions(self, compact: bool = False, choice: bool = False, shortlist: list[str] | None = None) -> str:
        # a choice prompt never says JSON: the simulator answers it with the label in a sentence
        labels = shortlist or self.labels
        if compact:  # small models lose the task in long prompts: labels and one instruction
            reply = "Reply with the label only." if choice else 'Reply with JSON only: {"label": "<label>"}.'
            return f"Classify the text. {LABELS}{', '.join(labels)}.\n{reply}"
        reply = ("Reply with the label only, exactly as written above." if choice else
                 'Reply with a JSON object only: {"label": "<one of the labels>"}.')
        parts = [f"You label texts. Read the text and choose exactly one label {FROM}{', '.join(labels)}.", reply]
        if self.guidelines:
            parts.insert(1, "Guidelines:\n" + (self.guidelines if not shortlist else self._guidelines_for(shortlist)))
        return "\n\n".join(parts)

    def _guidelines_for(self, labels: list[str]) -> str:
        """The guidelines without the definition lines of labels not offered: a shortlist's savings."""
        left_out = set(self.definitions()) - set(labels)
        return "\n".join(line for line in self.guidelines.splitlines()
                         if line.partition(":")[0].strip() not in left_out).strip()

    def answer_schema(self) -> dict:
        return {"type": "object", "properties": {"label": {"type": "string", "enum": self.labels}},
                "required": ["label"], "additionalProperties": False}

    def example_answer(self, example) -> dict:
        return {"label": example["label"]}

    def example_choice(self, example) -> str:
        return example["label"]

    def parse_teacher(self, content: str | None, row: dict, choice: bool = False) -> str:
        """JSON (also inside prose); with `choice`, a bare label or the first label the prose names."""
        if not choice:
            return super().parse_teacher(content, row)
        if content is None or not content.strip():
            raise OutputError("empty_output", "the reply is empty")
        return self._named(content)[0]

    @cached_property
    def _prose_label(self) -> re.Pattern:
        # labels and aliases as whole words, longest first; bare numbers in prose are counts, not labels
        keys = sorted((k for k in self._lookup if not k.isdigit()), key=len, reverse=True)
        words = "|".join(r"\s+".join(map(re.escape, k.split())) for k in keys)
        return re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.I)

    def _named(self, content: str) -> tuple[str, tuple[int, int]]:
        """The label a plain-text reply gives, and its span: the whole reply as a label (aliases and
        near misses included), else the label (or alias) its prose names, where first named."""
        bare = content.strip().strip("\"'`*.!").strip()
        if bare:
            try:
                start = content.index(bare)
                return self.normalize_label(bare), (start, start + len(bare))
            except OutputError:
                pass
        matches = list(self._prose_label.finditer(content))
        named = {self._lookup[norm(m.group())] for m in matches}
        if len(named) > 1:  # e.g. the label list echoed back: taking the first would favour labels[0]
            raise OutputError("ambiguous_label", f"the reply names {sorted(named)}: {content[:80]!r}")
        if not matches:
            raise OutputError("label_not_in_schema", f"no label from {self.labels} in reply {content[:80]!r}")
        return named.pop(), matches[0].span()

    def from_answer(self, answer, row: dict) -> str:
        if isinstance(answer, dict):
            if "label" not in answer:
                raise OutputError("missing_field", f"no 'label' key in {answer!r}")
            answer = answer["label"]
        return self.normalize_label(answer)

    def answer_tokens(self, row: dict) -> int:
        return len(json.dumps({"label": max(self.labels, key=len)})) // 4 + 2

    def choice_tokens(self) -> int:
        # the longest label at ~2 characters a token, and room for "The answer is ..."
        return len(max(self.labels, key=len)) // 2 + 8

    def confidence_spans(self, content: str) -> list[tuple[int, int]]:
        match = _LABEL_VALUE.search(content)
        if match:
            return [match.span(1)]
        try:  # a choice reply: the label where the parser found it
            return [self._named(content)[1]]
        except OutputError:
            return []

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        """The probability of the label's own tokens (autolabel's approach), else of the whole reply."""
        offsets, spans = token_offsets(content, logprobs), self.confidence_spans(content)
        if offsets is None or not spans:
            return super().logprob_confidence(content, logprobs, label, row)
        return span_probability(offsets, *spans[0]), None

    def noise_plan(self, groups: dict[str, list[dict]], sim) -> dict:
        """Realistic noise: a weak text classifier (TF-IDF + logistic regression, out of fold)
        scores every row; the lower its margin for the gold label, the likelier the teacher is
        wrong there, and a wrong answer is that classifier's top wrong label."""
        rows = [r for group in groups.values() for r in group]
        texts = [self.user_message(r) for r in rows]
        probs = weak_model_probabilities(texts, [r["label"] for r in rows], self.labels, sim.get("seed", 0))
        gold = np.array([self.labels.index(r["label"]) for r in rows])
        others = probs.copy()
        others[np.arange(len(rows)), gold] = -1.0
        margin = probs[np.arange(len(rows)), gold] - others.max(1)
        plan, first = {}, 0
        for name, group in groups.items():  # each group (gold, seed pool) gets the accuracy exactly
            part = slice(first, first + len(group))
            first += len(group)
            p, wrong = planned_mistakes(-margin[part], texts[part], sim, name)
            for text, p_i, w, top in zip(texts[part], p, wrong, others[part].argmax(1)):
                plan[text] = {"p": float(p_i), "wrong": bool(w), "answer": self.labels[top]}
        return plan

    def simulate(self, gold: str, row: dict, rng, sim, plan: dict | None = None,
                 resample: bool = False) -> tuple[dict, bool, list[bool]]:
        """(answer, whole answer right, rightness of each confidence unit). With a realistic
        `plan`, the planned mistake (a further sample is wrong at the row's own chance)."""
        if plan is not None:
            wrong = rng.random() < plan["p"] if resample else plan["wrong"]
            return ({"label": plan["answer"]}, False, [False]) if wrong else ({"label": gold}, True, [True])
        if rng.random() < sim["accuracy"]:
            return {"label": gold}, True, [True]
        confused = (sim.get("confusions") or {}).get(gold)
        if confused is None or rng.random() >= sim.get("confusion_share", 1.0):
            confused = rng.choice([label for label in self.labels if label != gold])
        elif not isinstance(confused, str):
            confused = rng.choice(list(confused))
        return {"label": confused}, False, [False]

    def student_target(self, label: str, row: dict) -> str:
        return label

    def parse_student(self, text: str, row: dict) -> str:
        return self.normalize_label(text)

    def candidates(self) -> list[str]:
        return self.labels

    def to_class_ids(self, label: str, row: dict) -> int:
        return self.labels.index(label)

    def from_class_ids(self, ids: int, row: dict) -> str:
        return self.labels[ids]

    def check_gold(self, value, where: str, row: dict | None = None) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: label is empty; expected one of {self.labels}")
        try:
            return self.normalize_label(str(value))
        except OutputError:
            raise DataError(f"{where}: label {value!r} is not in the label set {self.labels}") from None

    def counts(self, gold: list[str], pred: list[str | None]) -> np.ndarray:
        index = {label: k for k, label in enumerate(self.labels)}
        out = np.zeros((len(gold), len(self.labels), 3), dtype=np.int64)
        for i, (g, p) in enumerate(zip(gold, pred)):
            out[i, index[g], 2] = 1
            if p is not None:
                out[i, index[p], 1] = 1
                out[i, index[p], 0] = int(p == g)
        return out

    def majority(self, gold: list[str]) -> list[str]:
        top = Counter(gold).most_common(1)[0][0]
        return [top] * len(gold)

    def label_counts(self, labels: list[str | None]) -> np.ndarray:
        counts = Counter(label for label in labels if label is not None)
        return np.array([counts.get(label, 0) for label in self.labels], dtype=np.int64)

    def label_studio_config(self) -> str:
        return choices_config(self.labels, multiple=False)

    def review_prediction(self, row: dict) -> tuple[list[dict], str | None]:
        return choices_result([row["label"]] if row["label"] else []), row["label"]

    def argilla_question(self) -> dict:
        return {"name": "label", "type": "label_selection", "labels": self.labels}
