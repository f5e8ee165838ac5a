"""The grow loop's two other questions to the teacher, beside labeling a text (distill grow).

`Judge`: does this text belong to label X, defined as ...? One word back (two output tokens at
most), its confidence from the token's logprob. `Author`: write N texts of label X, of a given
length and style, about a sub-topic the teacher picks. Each is a `TeacherQuestion`, the part of
the task interface the teacher engine uses (messages, parsing, schema, confidence), so both go
through the same cache, retries, budget and resumable JSONL files as labeling.
"""

from __future__ import annotations

import math
import re

from distill.errors import OutputError
from distill.tasks.base import Task, TeacherQuestion, extract_json, token_offsets

class Request(TeacherQuestion):
    """One of grow's questions about a label of `task`."""

    system: str

    def __init__(self, task: Task):
        self.task, self.labels = task, task.labels
        self.definitions = task.definitions()

    def messages(self, row: dict, compact: bool = False, choice: bool = False) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.question(row)}]

    def label_line(self, label: str) -> str:
        definition = self.definitions.get(label)
        return f"Label: {label}" + (f"\nDefinition: {definition}" if definition else "")



class Judge(Request):
    """A yes/no question about one (text, label) pair; the answer is True or False."""

    kind = "judge"
    choice_answers = True
    reask = "Your reply is not valid: {error}. Answer again with one word: yes or no."
    # short: asked once per pair, so every word here is paid for on each question
    system = "You check labels. Answer yes or no."

    def question(self, row: dict) -> str:
        return (f"{self.label_line(row['asked'])}\nText: {row['text']}\n"
                f"Does the text belong to the label {row['asked']}? Answer yes or no.")

    def choice_tokens(self) -> int:
        return 2

    def request_metadata(self, row: dict, choice: bool = True) -> dict[str, str]:
        return {"distill_request": "judge", "label": row["asked"], "text": row["text"]}

    def estimate_answer_tokens(self, row: dict) -> int:
        return 2

    def answer_schema(self) -> dict:
        return {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
                "required": ["answer"], "additionalProperties": False}

    def parse_teacher(self, content: str | None, row: dict, choice: bool = True) -> bool:
        words = re.findall(r"[a-z]+", (content or "").lower())
        if not words or words[0] not in ("yes", "no"):
            raise OutputError("not_yes_or_no", f"expected yes or no, got {(content or '')[:40]!r}")
        return words[0] == "yes"

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        """The probability of the yes or no token itself."""
        offsets = token_offsets(content, logprobs) or []
        spans = [lp for s, e, lp in offsets if content[s:e].strip().lower().strip(".") in ("yes", "no")]
        return (math.exp(spans[0]) if spans else math.exp(sum(lp for _, lp in logprobs))), None


class Author(Request):
    """A request for `n` texts of one label, of a given length and style, about a sub-topic the
    teacher chooses; the answer is {"subtopic": ..., "texts": [...]}."""

    kind = "author"
    choice_answers = False
    reask = "Your reply is not valid: {error}. Answer again with only the JSON object described above."
    system = ('You write realistic example texts for a labeling taxonomy. Reply with a JSON object only: '
              '{"subtopic": "<the sub-topic you chose>", "texts": ["<text>", ...]}.')

    def question(self, row: dict) -> str:
        return (f"{self.label_line(row['asked'])}\nTexts: {row['n']}\nLength: {row['length']}\nStyle: {row['style']}\n"
                f"Choose one sub-topic of this label, not its most common case, and write {row['n']} different "
                f"texts about it that belong to the label, as people would write them.")

    def estimate_answer_tokens(self, row: dict) -> int:
        return 12 + row["n"] * (40 if row["length"] == "long" else 16)

    def request_metadata(self, row: dict, choice: bool = False) -> dict[str, str]:
        return {"distill_request": "author", "label": row["asked"], "texts": str(row["n"]), "length": row["length"]}

    def answer_schema(self) -> dict:
        return {"type": "object", "properties": {"subtopic": {"type": "string"},
                                                 "texts": {"type": "array", "items": {"type": "string"}}},
                "required": ["subtopic", "texts"], "additionalProperties": False}

    def parse_teacher(self, content: str | None, row: dict, choice: bool = False) -> dict:
        answer = extract_json(content)
        texts = answer.get("texts") if isinstance(answer, dict) else None
        if not isinstance(texts, list):
            raise OutputError("missing_field", f"no 'texts' list in {str(answer)[:80]!r}")
        kept = list(dict.fromkeys(" ".join(t.split()) for t in texts if isinstance(t, str) and t.strip()))
        if not kept:
            raise OutputError("empty_output", "the reply has no texts")
        subtopic = answer.get("subtopic")
        return {"subtopic": subtopic.strip() if isinstance(subtopic, str) else None, "texts": kept}

    def logprob_confidence(self, content: str, logprobs: list, label, row: dict):
        return None, None
