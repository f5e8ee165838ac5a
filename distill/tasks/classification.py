"""One label per text from a fixed set."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np

from distill.errors import DataError, OutputError
from distill.tasks.base import Task, span_probability, token_offsets

_LABEL_VALUE = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')


class Classification(Task):
    kind = "classification"
    answer_prefix = "Label:"
    main_metric = "accuracy"
    headline = ("accuracy", "macro_f1")

    def instructions(self) -> str:
        parts = [
            "You label texts. Read the text and choose exactly one label from this set: "
            + ", ".join(self.labels) + ".",
            'Reply with a JSON object only: {"label": "<one of the labels>"}.',
        ]
        if self.guidelines:
            parts.insert(1, "Guidelines:\n" + self.guidelines)
        return "\n\n".join(parts)

    def answer_schema(self) -> dict:
        return {"type": "object", "properties": {"label": {"type": "string", "enum": self.labels}},
                "required": ["label"], "additionalProperties": False}

    def example_answer(self, example) -> dict:
        return {"label": example["label"]}

    def from_answer(self, answer, row: dict) -> str:
        if isinstance(answer, dict):
            if "label" not in answer:
                raise OutputError("missing_field", f"no 'label' key in {answer!r}")
            answer = answer["label"]
        return self.normalize_label(answer)

    def answer_tokens(self, row: dict) -> int:
        return len(json.dumps({"label": max(self.labels, key=len)})) // 4 + 2

    def confidence_spans(self, content: str) -> list[tuple[int, int]]:
        match = _LABEL_VALUE.search(content)
        return [match.span(1)] if match else []

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        """The probability of the label's own tokens (autolabel's approach), else of the whole reply."""
        offsets, spans = token_offsets(content, logprobs), self.confidence_spans(content)
        if offsets is None or not spans:
            return super().logprob_confidence(content, logprobs, label, row)
        return span_probability(offsets, *spans[0]), None

    def simulate(self, gold: str, row: dict, rng, sim) -> tuple[dict, bool, list[bool]]:
        """(answer, whole answer right, rightness of each confidence unit)."""
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

    def check_gold(self, value, where: str) -> str:
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
