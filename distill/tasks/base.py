"""What every task kind provides; stages call only this interface."""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
from omegaconf import ListConfig, OmegaConf

from distill.errors import DataError, OutputError

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(content: str | None) -> Any:
    """Parse a JSON value from a model reply: bare JSON, a ```json fence, or JSON inside prose."""
    if content is None or not content.strip():
        raise OutputError("empty_output", "the reply is empty")
    text = content.strip()
    candidates = [text, *_FENCE.findall(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise OutputError("invalid_json", f"no JSON object in reply {content[:80]!r}")


def clip(text: str | None, chars: int) -> str | None:
    """`text` cut to `chars` characters, saying how many more there were: a runaway answer."""
    if text is None or len(text) <= chars:
        return text
    return f"{text[:chars]}... [{len(text) - chars:,} more characters]"


def norm(text: str) -> str:
    return " ".join(str(text).split()).lower()


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def token_offsets(content: str, logprobs: list) -> list[tuple[int, int, float]] | None:
    """Character span and logprob of each reply token; None when the tokens do not spell the reply."""
    out, pos = [], 0
    for token, logprob in logprobs:
        out.append((pos, pos + len(token), logprob))
        pos += len(token)
    return out if "".join(t for t, _ in logprobs) == content else None


def span_probability(offsets, start: int, end: int) -> float:
    """Probability of the tokens overlapping content[start:end]."""
    return math.exp(sum(lp for s, e, lp in offsets if s < end and e > start))


def choices_config(labels: list[str], multiple: bool) -> str:
    """Label Studio's labeling config for choosing one label (or several) for a text."""
    tags = "".join(f"<Choice value={quoteattr(t)}/>" for t in labels)
    return (f'<View>\n  <Text name="text" value="$text"/>\n'
            f'  <Choices name="label" toName="text" choice="{"multiple" if multiple else "single"}">{tags}</Choices>\n'
            f'</View>\n')


def choices_result(chosen: list[str]) -> list[dict]:
    """A Label Studio pre-annotation choosing these labels (none: no pre-annotation)."""
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": chosen}}] if chosen else []


class TeacherQuestion(ABC):
    """What the teacher engine asks and reads back, for one kind of question: the chat, the
    answer's schema, parsing, confidence from logprobs, votes over samples, and the metadata a
    simulated teacher answers from. Labeling a row is one such question (`TeacherPrompt`); grow's
    yes/no and writing questions are others (`distill.tasks.requests`)."""

    kind: str
    rationale = False  # the answer also carries a one-sentence rationale

    choice_answers = False  # can answer with a bare label as plain text (teacher.output=choice)

    @abstractmethod
    def messages(self, row: dict, compact: bool = False, choice: bool = False) -> list[dict]:
        """The chat for one row. `compact`: a short system prompt for small models (teacher.prompt);
        `choice`: the answer asked for as a bare label, not JSON (teacher.output=choice)."""

    @abstractmethod
    def parse_teacher(self, content: str | None, row: dict, choice: bool = False):
        """The answer from the reply's text, or an OutputError saying what is wrong with it."""

    @abstractmethod
    def answer_schema(self) -> dict:
        """The JSON schema of an answer (before any rationale)."""

    @abstractmethod
    def estimate_answer_tokens(self, row: dict) -> int:
        """Rough reply size in tokens, for estimates before asking."""

    @abstractmethod
    def request_metadata(self, row: dict, choice: bool = False) -> dict[str, str]:
        """What a simulated teacher needs to know about a request beside its chat (the engine
        sends it to the simulator only): which question it is, and what it asks."""

    def schema(self) -> dict:
        schema = self.answer_schema()
        if self.rationale:
            schema = {**schema, "properties": {"rationale": {"type": "string"}, **schema["properties"]},
                      "required": ["rationale", *schema["required"]]}
        return schema

    def response_format(self) -> dict:
        return {"type": "json_schema", "json_schema": {"name": self.kind, "strict": True,
                                                        "schema": self.schema()}}

    def choice_tokens(self) -> int:
        """Reply size to allow for a bare label (kinds with `choice_answers`)."""
        raise NotImplementedError(f"{self.kind} answers cannot be a bare label")

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        """(row confidence, per-unit confidences or None) from the reply's token logprobs."""
        return math.exp(sum(lp for _, lp in logprobs)), None

    def confidence_spans(self, content: str) -> list[tuple[int, int]]:
        """Character spans of the reply that carry the answer (one per unit: a label, an entity)."""
        return []

    def vote(self, labels: list, n: int, row: dict):
        """Self-consistency: the most common of n sampled labels, with agreement as confidence."""
        counts = Counter(json.dumps(label) for label in labels)
        top, count = counts.most_common(1)[0]
        return json.loads(top), count / n, None

    def rationale_of(self, content: str | None) -> str | None:
        """The teacher's rationale from its raw reply, when it gave one."""
        try:
            answer = extract_json(content)
        except OutputError:
            return None
        value = answer.get("rationale") if isinstance(answer, dict) else None
        return value.strip() if isinstance(value, str) and value.strip() else None

class TeacherPrompt(TeacherQuestion):
    """Labeling a row: the chat a task kind builds from its instructions, examples and answer
    schema, and how a reply becomes a label."""

    shortlists = False  # a row may offer the teacher only its likeliest labels (task.shortlist)

    def messages(self, row: dict, compact: bool = False, choice: bool = False) -> list[dict]:
        msgs = [{"role": "system", "content": self.system_prompt(compact, choice, row.get("shortlist"))}]
        for ex in self.examples:
            msgs.append({"role": "user", "content": self.example_input(ex)})
            msgs.append({"role": "assistant", "content": self.example_choice(ex) if choice
                         else json.dumps(self.example_answer(ex))})
        msgs.append({"role": "user", "content": self.user_message(row)})
        return msgs

    def parse_teacher(self, content: str | None, row: dict, choice: bool = False):
        return self.from_answer(extract_json(content), row)

    def estimate_answer_tokens(self, row: dict) -> int:
        """Rough reply size in tokens, for estimates before asking; a rationale adds one sentence."""
        return self.answer_tokens(row) + (40 if self.rationale else 0)

    def request_metadata(self, row: dict, choice: bool = False) -> dict[str, str]:
        """Labeling: the labels offered (a shortlist) and the form asked for."""
        meta = {"distill_request": "label", "answer": "choice" if choice else "json"}
        if row.get("shortlist"):
            meta["shortlist"] = json.dumps(list(row["shortlist"]))
        return meta


    def system_prompt(self, compact: bool = False, choice: bool = False, shortlist: list[str] | None = None) -> str:
        # a row's shortlist (task.shortlist): the labels it may take, in kinds that offer one
        prompt = self.instructions(compact, choice, shortlist) if shortlist else self.instructions(compact, choice)
        if self.rationale:
            prompt += ('\n\nFirst give a one-sentence "rationale" for your answer, naming the words that '
                       'decide it, as the first key of the JSON object.')
        return prompt

    def user_message(self, row: dict) -> str:
        return row["text"]

    def example_input(self, example) -> str:
        return example["text"]

    @abstractmethod
    def instructions(self, compact: bool = False, choice: bool = False) -> str:
        """The system prompt, before any rationale request."""
        raise NotImplementedError

    def example_choice(self, example) -> str:
        """A few-shot answer as a bare label (kinds with `choice_answers`)."""
        raise NotImplementedError(f"{self.kind} answers cannot be a bare label")

    @abstractmethod
    def example_answer(self, example) -> dict:
        raise NotImplementedError

    @abstractmethod
    def answer_tokens(self, row: dict) -> int:
        """Rough answer size in tokens, before any rationale."""
        raise NotImplementedError

    @abstractmethod
    def from_answer(self, answer, row: dict):
        """The label from the teacher's parsed JSON answer, or an OutputError."""
        raise NotImplementedError

    def least_sure(self, confidence: float | None, units: list | None) -> float | None:
        """A labeled row's confidence for cleaning: its least confident unit (entity, label) where
        it has them, else the answer's."""
        known = [c for c in units or [] if c is not None]
        return min(known) if known else confidence


class SimulatedAnswers(ABC):
    """What the simulated teacher answers from gold: noise per row, and a rationale."""

    @abstractmethod
    def simulate(self, gold, row: dict, rng, sim, plan=None, resample: bool = False) -> tuple[dict, bool, list[bool]]:
        """The simulated teacher's (answer, whole answer right, rightness of each confidence unit)."""
        raise NotImplementedError

    @abstractmethod
    def noise_plan(self, groups: dict[str, list[dict]], sim) -> dict:
        """Realistic noise: user message -> the planned mistakes for that row."""
        raise NotImplementedError

    def simulated_rationale(self, answer: dict, row: dict) -> str:
        """What the simulated teacher says: the longest words of the text, then its answer."""
        words = sorted(set(row["text"].split()), key=lambda w: (-len(w), w))[:3]
        return f"The text mentions {', '.join(words)}, so the answer is {json.dumps(answer)}."


class StudentTargets(ABC):
    """What the student learns and how its output becomes a label: a text target for generative
    students, class ids for an encoder's head, per-unit confidences."""

    answer_prefix: str

    def student_prompt(self, row: dict) -> str:
        return f"{row['text']}\n{self.answer_prefix}"

    def rationale_prompt(self, row: dict) -> str:
        """The student's second task in rationale distillation; never asked when labeling."""
        return f"Explain: {row['text']}\nRationale:"

    @abstractmethod
    def student_target(self, label, row: dict) -> str:
        raise NotImplementedError

    @abstractmethod
    def parse_student(self, text: str, row: dict):
        raise NotImplementedError

    def candidates(self) -> list[str] | None:
        """Target strings a student can score instead of generating; None means generate."""
        return None

    token_level = False  # one class per word (NER tags) rather than per text

    multi_label = False  # any number of classes per text: sigmoid outputs, one per class

    def class_names(self) -> list[str]:
        return self.labels

    @abstractmethod
    def to_class_ids(self, label, row: dict):
        """The label as the encoder head's target: a class id, a 0/1 per class (multi_label), or
        a class id per word (token_level)."""
        raise NotImplementedError

    @abstractmethod
    def from_class_ids(self, ids, row: dict):
        """The label from the head's answer (same shapes as `to_class_ids`)."""
        raise NotImplementedError

    def word_unit_confidence(self, label, word_logprobs: list[float]) -> list[float]:
        """Token-level kinds: each unit's confidence from a tagger's per-word log-probabilities."""
        raise NotImplementedError(f"{self.kind} labels are not tags over words")

    def student_unit_confidence(self, text: str, pieces: list, label, row: dict):
        """Per-unit confidences of a generated student answer (NER: per entity); None here."""
        return None

    def balance_class(self, label, counts: np.ndarray) -> str | None:
        """The class a training row counts for in `train.class_balance`: the rarest (by `counts`,
        from `label_counts`) of the classes it holds; None when it holds none (NER: no entity)."""
        present = np.flatnonzero(self.label_counts([label]))
        return self.labels[present[np.argmin(counts[present])]] if len(present) else None

    clean_methods = ("confidence",)  # train.clean.method values this kind supports

    grows = False  # distill grow can build its training data: one label per text, from a taxonomy


class Metrics(ABC):
    """Scoring labels against gold, and what the monitor counts."""

    main_metric: str  # the headline metric (accuracy; entity F1 for NER)

    f1_key = "macro_f1"  # the F1 the monitor's paired test compares

    accuracy_name = "accuracy"  # what `accuracy` (the share of rows entirely right) is called for this kind

    @abstractmethod
    def counts(self, gold: list, pred: list) -> np.ndarray:
        """Per row and class: (tp, predicted, gold) counts, [rows, classes, 3]."""
        raise NotImplementedError

    @abstractmethod
    def label_counts(self, labels: list) -> np.ndarray:
        """How often each class is labeled: [classes]; the units the monitor's label mix counts."""
        raise NotImplementedError

    def cardinality(self, labels: list) -> np.ndarray:
        """How many units (labels, entities) each valid label holds; the monitor tests its drift
        when it varies. One label per text here."""
        return np.ones(sum(label is not None for label in labels), dtype=np.int64)

    @abstractmethod
    def majority(self, gold: list) -> list:
        """The majority baseline's answers for these gold labels."""
        raise NotImplementedError

    def correct(self, gold: list, pred: list) -> np.ndarray:
        """Per row: the prediction is entirely right."""
        return np.array([p is not None and p == g for g, p in zip(gold, pred)], dtype=bool)

    def metrics(self, gold: list, pred: list) -> dict:
        from distill.stats import scores

        return {**scores(self.counts(gold, pred), self.correct(gold, pred), self.labels),
                "invalid": sum(p is None for p in pred)}

    def summarize(self, labels: list) -> dict:
        """Each class's share of the labels (invalid ones left out)."""
        counts = self.label_counts(labels)
        return {label: float(c) / max(1, int(counts.sum())) for label, c in zip(self.labels, counts)}


class ReviewExport(ABC):
    """Review files for people: Label Studio and Argilla."""

    @abstractmethod
    def label_studio_config(self) -> str:
        raise NotImplementedError

    @abstractmethod
    def review_prediction(self, row: dict) -> tuple[list[dict], Any]:
        """A labeled row as (Label Studio pre-annotation results, Argilla suggestion value)."""
        raise NotImplementedError

    @abstractmethod
    def argilla_question(self) -> dict:
        """The Argilla question people answer for this task."""
        raise NotImplementedError


class Task(TeacherPrompt, SimulatedAnswers, StudentTargets, Metrics, ReviewExport):
    """A labeling task: its labels and rows, and one class per job the stages need of it (above):
    prompting and parsing the teacher, simulated answers, the student's targets, metrics, review
    export. Stages call only these interfaces; a new kind implements their abstract methods
    (see docs/extending.md)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.labels: list[str] = list(cfg.labels)
        self.guidelines: str = (cfg.get("guidelines") or "").strip()
        examples = cfg.get("examples") or []
        self.examples = OmegaConf.to_container(examples) if isinstance(examples, ListConfig) else list(examples)
        lookup = {norm(label): label for label in self.labels}
        for alias, label in (cfg.get("aliases") or {}).items():
            if label not in self.labels:
                raise DataError(f"task.aliases: {alias!r} maps to {label!r}, which is not one of {self.labels}")
            lookup[norm(alias)] = label
        self._lookup = lookup
        self.max_edit_distance = int(cfg.get("max_edit_distance", 2))
        self.rationale = bool(cfg.get("rationale", False))  # the teacher also explains its answer

    def input_column(self, spec) -> str:
        """The column of a data split that holds the input (`data.SPLIT.text_column`)."""
        return spec.get("text_column", "text")

    def read_input(self, value, where: str, column: str) -> dict:
        """The row fields (`text`, and any the kind adds) from one input value, or a DataError."""
        if value is not None and not isinstance(value, str):
            raise DataError(f"{where}: field {column!r} must be text, got {value!r}")
        if not value or not value.strip():
            raise DataError(f"{where}: field {column!r} is empty; every row needs text to label")
        return {"text": value}

    def input_fields(self) -> dict[str, pa.DataType]:
        """Row fields beside `id` and `text` that travel with every label (NER: `tokens`)."""
        return {}

    @abstractmethod
    def label_type(self) -> pa.DataType:
        """How a label is stored in Parquet (a string, a list of labels, a list of tags)."""
        raise NotImplementedError

    @abstractmethod
    def check_gold(self, value, where: str, row: dict):
        """A human label in the task's own form, or a DataError naming `where` and what is wrong;
        `row` holds the fields `read_input` gave."""
        raise NotImplementedError

    def normalize_label(self, value: Any) -> str:
        """Map a label string to the label set or raise OutputError: case, whitespace, aliases, then
        the single closest label (or alias) within `max_edit_distance` edits and under half its length."""
        if not isinstance(value, str):
            raise OutputError("label_not_in_schema", f"{value!r} is not one of {self.labels}")
        key = norm(value)
        if key in self._lookup:
            return self._lookup[key]
        # a length gap is a lower bound on the distance: a runaway answer costs no edit-distance work
        scored = sorted((edit_distance(key, k), k) for k in self._lookup
                        if abs(len(k) - len(key)) <= self.max_edit_distance)
        if not scored:
            raise OutputError("label_not_in_schema", f"{clip(value, 80)!r} is not one of {self.labels}")
        (best, closest), *rest = scored
        near = best <= self.max_edit_distance and best < len(closest) / 2
        unique = not rest or rest[0][0] > best or self._lookup[rest[0][1]] == self._lookup[closest]
        if near and unique:
            return self._lookup[closest]
        raise OutputError("label_not_in_schema", f"{clip(value, 80)!r} is not one of {self.labels}")

    def definitions(self) -> dict[str, str]:
        """Each label's definition, from the guidelines' `label: definition` lines (read once)."""
        if not hasattr(self, "_definitions"):
            self._definitions = {}
            for line in self.guidelines.splitlines():
                name, sep, text = line.partition(":")
                if sep and name.strip() in self.labels and text.strip():
                    self._definitions[name.strip()] = text.strip()
        return self._definitions

