"""The teacher: any OpenAI-compatible chat endpoint through the `openai` client.

Each labeled row keeps the raw output, the parsed label (or an error type), a confidence from
token logprobs when the endpoint returns them, and token usage. Rows are appended to a JSONL file
as they finish; a rerun skips the ids already there, so a crash loses at most the rows in flight.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import openai
from tqdm.auto import tqdm

from distill.data import read_jsonl
from distill.errors import OutputError, TeacherError
from distill.tasks import Task

SIMULATED_KEY = "sk-simulated"


class Teacher:
    def __init__(self, cfg, task: Task, base_url: str | None = None, simulated: bool = False):
        self.cfg, self.task, self.simulated = cfg, task, simulated
        key = SIMULATED_KEY if simulated else os.environ.get(cfg.api_key_env)
        if not key:
            raise TeacherError(f"the teacher's API key is not set: export {cfg.api_key_env}=... "
                               f"(teacher.api_key_env names the variable)")
        self.client = openai.OpenAI(base_url=base_url or cfg.base_url, api_key=key,
                                    timeout=cfg.timeout, max_retries=cfg.max_retries)

    def request(self, row: dict) -> dict:
        """Label one row; failures become an error type on the row, never an exception."""
        kwargs = dict(model=self.cfg.model, messages=self.task.messages(row),
                      temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens)
        if self.cfg.output == "json_schema":
            kwargs["response_format"] = self.task.response_format()
        elif self.cfg.output == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        if self.cfg.logprobs:
            kwargs["logprobs"] = True
        record = {"id": row["id"], "text": row["text"], "label": None, "confidence": None,
                  "error": None, "raw": None, "source": "teacher", "model": self.cfg.model,
                  "simulated": self.simulated, "prompt_tokens": 0, "completion_tokens": 0}
        if "tokens" in row:
            record["tokens"] = row["tokens"]
        try:
            response = self.client.chat.completions.create(**kwargs)
        except openai.APIError as e:
            record["error"] = f"request_failed:{type(e).__name__}"
            return record
        choice = response.choices[0]
        record["raw"] = choice.message.content
        if response.usage:
            record["prompt_tokens"] = response.usage.prompt_tokens
            record["completion_tokens"] = response.usage.completion_tokens
        try:
            record["label"] = self.task.parse_teacher(choice.message.content, row)
        except OutputError as e:
            record["error"] = e.kind
            return record
        if choice.logprobs and choice.logprobs.content:
            record["confidence"] = math.exp(sum(t.logprob for t in choice.logprobs.content))
        return record

    def label(self, rows, out_path: Path, desc: str = "teacher") -> int:
        """Label every row not already in `out_path`; return how many requests were made."""
        out_path.parent.mkdir(parents=True, exist_ok=True)
        done = read_jsonl(out_path)
        # rewrite what survived, dropping a line torn by a crash mid-write
        with open(out_path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in done)
        done_ids = {r["id"] for r in done}
        todo = [r for r in rows if r["id"] not in done_ids]
        with open(out_path, "a", encoding="utf-8") as f, \
                ThreadPoolExecutor(self.cfg.concurrency) as pool, \
                tqdm(total=len(rows), initial=len(rows) - len(todo), desc=desc, unit="row") as bar:
            futures = [pool.submit(self.request, r) for r in todo]
            for future in as_completed(futures):
                f.write(json.dumps(future.result()) + "\n")
                f.flush()
                bar.update()
        return len(todo)


def label_summary(records: list[dict]) -> dict:
    """Counts for a label file: rows, valid labels, error types, tokens spent."""
    errors: dict[str, int] = {}
    for r in records:
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {"rows": len(records), "labeled": sum(r["label"] is not None for r in records), "errors": errors,
            "prompt_tokens": sum(r["prompt_tokens"] for r in records),
            "completion_tokens": sum(r["completion_tokens"] for r in records)}
