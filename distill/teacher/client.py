"""The teacher engine: any OpenAI-compatible chat endpoint through the async `openai` client.

For each row it builds the task's messages, serves the reply from the SQLite cache or asks the
endpoint (bounded concurrency, token-bucket rpm/tpm limits, retries with backoff that honour
`Retry-After`, API keys rotated when one is rate-limited or rejected), validates the answer and
re-asks with the validation error when it is invalid. Each finished row is appended to a JSONL
file right after its reply is committed to the cache, so a killed run loses nothing it paid for.
A request that keeps failing, and an answer still invalid after its re-asks, end as a row with an
error type; a rerun asks again for only those (a cached answer that was invalid is not served
again: the request is sent anew).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import openai
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from distill.config import config_file
from distill.data import read_jsonl, write_atomic
from distill.errors import OutputError, TeacherError
from distill.schema import MODES, check_teacher
from distill.tasks.base import TeacherQuestion, clip
from distill.teacher.cache import Cache, request_key
from distill.teacher.limits import (
    KeyPool,
    KeyRejected,
    TokenBucket,
    backoff,
    retry_after,
)

SIMULATED_KEY = "sk-simulated"
NO_KEY = "sk-no-key"  # teacher.api_key_env: null, for local servers that take any key
# errors worth another try on a rerun (the endpoint failed us), as opposed to answers we judged invalid
TRANSIENT = {"rate_limited", "server_error", "timeout", "connection_error", "auth_failed", "batch_failed",
             "bad_response"}
RAW_CHARS = 20_000  # of an answer kept in a record: a runaway reply must not bloat every label file
REASK = ("Your reply is not valid: {error}. Answer again with only the JSON object described above, "
         "using exactly the allowed labels.")
REASK_CHOICE = "Your reply is not valid: {error}. Answer again with only one of the allowed labels."


def finished(record: dict) -> bool:
    """A row that needs no new request on a rerun: one with a valid answer. Rows the endpoint
    failed and answers judged invalid are asked again."""
    return record.get("error") is None


def invalid(record: dict) -> bool:
    """An answer the teacher gave that stayed invalid after its re-asks (not a failed request)."""
    return record.get("error") is not None and record["error"] not in TRANSIENT


class RequestFailed(Exception):
    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class FormatRefused(Exception):
    """The endpoint does not support the requested response_format."""


class NotCached(Exception):
    """Cache-only pass (Batch API mode): this request has to go into a batch first."""


class BudgetReached(Exception):
    pass


def prices(model: str, override=None) -> dict | None:
    """USD per 1M input/output tokens, from `teacher.price` or distill/configs/prices.yaml."""
    if override:
        return {"input": float(override["input"]), "output": float(override["output"])}
    table = OmegaConf.to_container(OmegaConf.load(config_file("prices.yaml")))
    return table.get(model)


def usd(price: dict, prompt_tokens: int, completion_tokens: int) -> float:
    """What tokens cost at a price in USD per 1M input/output tokens."""
    return (prompt_tokens * price["input"] + completion_tokens * price["output"]) / 1e6


def compact(reply: dict) -> dict:
    """Keep what labeling needs from a chat.completion: contents, token logprobs, usage."""
    choices = []
    for choice in reply.get("choices") or []:
        lp = (choice.get("logprobs") or {}).get("content")
        choices.append({"content": (choice.get("message") or {}).get("content"),
                        "logprobs": [[t["token"], t["logprob"]] for t in lp] if lp else None})
    usage = reply.get("usage") or {}
    return {"choices": choices, "usage": {"prompt_tokens": usage.get("prompt_tokens") or 0,
                                          "completion_tokens": usage.get("completion_tokens") or 0}}


class _Attrs(dict):
    """Plain-dict config with attribute access: OmegaConf lookups are too slow per row."""

    __getattr__ = dict.__getitem__

    @classmethod
    def of(cls, value):
        return cls({k: cls.of(v) for k, v in value.items()}) if isinstance(value, dict) else value


class Teacher:
    def __init__(self, cfg, task: TeacherQuestion, base_url: str | None = None, simulated: bool = False,
                 cache_path: str | Path | None = None, need_key: bool = True):
        cfg = _Attrs.of(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg))
        self.cfg, self.task, self.simulated = cfg, task, simulated
        self.base_url = base_url or cfg.base_url
        envs = [cfg.api_key_env] if isinstance(cfg.api_key_env, str) else list(cfg.api_key_env or [])
        keys = [("simulated", SIMULATED_KEY)] if simulated else [("none", NO_KEY)] if not envs else \
            [(env, os.environ[env]) for env in envs if os.environ.get(env)]
        if not keys and need_key:
            raise TeacherError(f"the teacher's API key is not set: export {envs[0]}=... "
                               f"(teacher.api_key_env names the variable, or a list of them)")
        self._keys = keys
        self.price = prices(cfg.model, cfg.get("price"))
        check_teacher(cfg, task, self.price)
        self.mode, self.choice = cfg.output, cfg.output == "choice"
        self.object_schema = False  # json_schema refused: the schema rides in json_object's `schema` field
        self.compact = cfg.get("prompt") == "compact"
        # what an invalid answer is asked again with: a question kind's own words, or the label's
        self.reask = getattr(task, "reask", None) or (REASK_CHOICE if self.choice else REASK)
        self.cache = Cache(cache_path or cfg.cache)
        # formats this endpoint refused in an earlier run are not offered again (a rerun sends nothing)
        self._format_note = f"format {self.base_url} {cfg.model} {self.mode}"
        if refused := self.cache.meta(self._format_note):
            self.mode, self.object_schema = json.loads(refused)
        self.spent = 0.0  # USD paid by this process, across label() calls
        # paid before, by earlier runs and stages sharing this cache: every billed reply is in it
        self.spent_before = self.cache.spent()
        self.cache_only: str | None = None  # None | "collect" | "fail" (Batch API mode)
        self.needed: dict[str, dict] = {}  # request key -> body, collected in a cache-only pass
        self.fresh: dict[str, float] = {}  # request key -> USD, replies a batch just fetched
        # replies this Teacher got from the endpoint: served again from the cache even when invalid
        # (a repeated text, a batch's next pass); an invalid one cached by an earlier run is asked anew
        self.this_run: set[str] = set()
        self.settled: set[str] = set()  # row ids this Teacher wrote with an invalid answer: kept for this run
        self.stats = self._new_stats()

    # -- request bodies and cost ----------------------------------------------------------------
    def messages(self, row: dict) -> list[dict]:
        return self.task.messages(row, compact=self.compact, choice=self.choice)

    def body(self, messages: list[dict], row: dict) -> dict:
        # a bare label needs a few tokens: a small model asked for more may ramble until the limit
        max_tokens = min(self.cfg.max_tokens, self.task.choice_tokens()) if self.choice else self.cfg.max_tokens
        body = {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                "max_tokens": max_tokens}
        if self.cfg.samples > 1:
            body.update(n=self.cfg.samples, temperature=self.cfg.sample_temperature)
        if self.mode == "json_schema":
            body["response_format"] = self.task.response_format()
        elif self.mode == "json_object":
            body["response_format"] = {"type": "json_object"}
            if self.object_schema:
                body["response_format"]["schema"] = self.task.schema()
        if self.cfg.logprobs:
            body["logprobs"] = True
            if self.cfg.get("top_logprobs") is not None:  # llama.cpp's server sends logprobs only then
                body["top_logprobs"] = self.cfg.top_logprobs
        if self.simulated:  # what the simulator answers from; a real endpoint never sees it
            body["metadata"] = self.task.request_metadata(row, self.choice)
        return body

    def cost(self, prompt_tokens: int, completion_tokens: int, discount: float = 1.0) -> float:
        return discount * usd(self.price, prompt_tokens, completion_tokens) if self.price else 0.0

    def over_budget(self, cost: float) -> bool:
        """Would spending `cost` more pass `teacher.budget_usd` (counting what earlier runs paid)?"""
        budget = self.cfg.get("budget_usd")
        return budget is not None and self.spent_before + self.spent + cost > budget

    def account(self, stats: dict, usage: dict, cost: float) -> None:
        """Count one paid reply in `stats` and in this process's spend."""
        self.spent += cost
        stats["billed"] += 1
        stats["prompt_tokens"] += usage["prompt_tokens"]
        stats["completion_tokens"] += usage["completion_tokens"]
        stats["cost_usd"] += cost

    def estimate_tokens(self, body: dict, row: dict) -> tuple[int, int]:
        """Rough token counts before asking (4 characters a token), for limits, dry runs and budgets."""
        prompt = sum(len(m["content"] or "") // 4 + 4 for m in body["messages"])
        return prompt, self.task.estimate_answer_tokens(row) * body.get("n", 1)

    def estimate(self, rows) -> dict:
        """What labeling `rows` would take: rows, cache hits, estimated tokens and USD (dry run)."""
        bodies = [(self.body(self.messages(r), r), r) for r in rows]
        keys = [request_key(b) for b, _ in bodies]
        cached = self.cache.has(keys)
        prompt = completion = 0
        for key, (body, row) in zip(keys, bodies):
            if key not in cached:
                p, c = self.estimate_tokens(body, row)
                prompt, completion = prompt + p, completion + c
        cost = self.cost(prompt, completion) if self.price else None
        return {"rows": len(rows), "cached": len(cached), "prompt_tokens": prompt,
                "completion_tokens": completion, "cost_usd": cost,
                "batch_cost_usd": cost * self.cfg.batch_discount if cost is not None else None}

    # -- one HTTP request, with retries ---------------------------------------------------------
    async def _send(self, body: dict, key: str, est: tuple[int, int], again: str = "") -> dict:
        kind, detail = "server_error", ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
            try:
                k = await self._pool.acquire()
            except KeyRejected as e:
                raise RequestFailed("auth_failed", str(e)) from None
            await self._rpm.take(1)
            await self._tpm.take(sum(est))
            wait = None
            try:
                # the idempotency key lets endpoints that honour it answer a repeat without billing
                # it again (a request in flight when the process was killed)
                if self._clients[k] is None:
                    self._clients[k] = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._keys[k][1],
                                                          timeout=self.cfg.timeout, max_retries=0)
                # `again`: a new key when an invalid cached reply is asked anew, so it is not replayed
                reply = await self._clients[k].chat.completions.create(
                    **body, extra_headers={"Idempotency-Key": f"{self.cache.nonce[:8]}-{key}{again}"})
                if not hasattr(reply, "model_dump"):  # a proxy's HTML page, say, sent as 200
                    raise ValueError(f"{type(reply).__name__} {str(reply)[:80]!r}")
                reply = compact(reply.model_dump())
                self._pool.ok(k)
                usage = reply["usage"]
                self._tpm.refund(sum(est) - usage["prompt_tokens"] - usage["completion_tokens"])
                return reply
            except openai.RateLimitError as e:
                kind, detail = "rate_limited", e.message
                # rotate: this key rests for the time the server asked, the next request takes another
                self._pool.cool(k, backoff(attempt, self.cfg.backoff.base, self.cfg.backoff.max,
                                           retry_after(e.response.headers)))
                continue
            except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
                kind, detail = "auth_failed", f"key from ${self._pool.names[k]} rejected (HTTP {e.status_code})"
                if self._pool.reject(k):
                    tqdm.write(f"teacher: the API key in ${self._pool.names[k]} was rejected "
                               f"(HTTP {e.status_code}); carrying on with the other keys", file=sys.stderr)
                continue
            except ValueError as e:  # not a chat completion: HTML, or JSON cut off mid-way
                kind, detail = "bad_response", f"the endpoint's reply is not a chat completion: {str(e)[:120]}"
            except openai.APITimeoutError:
                kind, detail = "timeout", f"no reply within {self.cfg.timeout}s"
            except openai.APIConnectionError as e:
                kind, detail = "connection_error", str(e.__cause__ or e)
            except openai.APIStatusError as e:
                # a format the endpoint does not take: 400 from OpenAI, 500 from llama.cpp's body validation
                if "response_format" in body and e.status_code in (400, 422, 500) and \
                        ("response_format" in e.message or "json_schema" in e.message):
                    raise FormatRefused(e.message) from None
                if e.status_code == 400:
                    raise RequestFailed("bad_request", e.message) from None
                if e.status_code < 500:
                    raise RequestFailed(f"http_{e.status_code}", e.message) from None
                kind, detail, wait = "server_error", f"HTTP {e.status_code}", retry_after(e.response.headers)
            if attempt < self.cfg.max_retries:
                await asyncio.sleep(backoff(attempt, self.cfg.backoff.base, self.cfg.backoff.max, wait))
        raise RequestFailed(kind, detail)

    async def _complete(self, messages: list[dict], row: dict) -> tuple[dict, float, bool]:
        """The reply to `messages` from the cache, else from the endpoint (then cached); its cost; cached?"""
        while True:
            mode, body = self._format(), self.body(messages, row)
            key = request_key(body)
            reply = self.cache.get(key)
            if reply is not None:
                if key in self.fresh:  # paid for by this run's batch: counted on its row
                    self.this_run.add(key)
                    return reply, self.fresh.pop(key), False
                if key in self.this_run or self._valid(reply, row):
                    self.stats["cache_hits"] += 1
                    return reply, 0.0, True
                # an invalid answer cached by an earlier run: asked anew below, replacing it
            if self.cache_only == "collect":
                self.needed[key] = body
                raise NotCached
            if self.cache_only == "fail":
                raise RequestFailed("batch_failed", "the Batch API returned no reply for this request")
            if key in self._inflight:  # the same request is on its way (a repeated text): wait for its reply
                await self._inflight[key].wait()
                continue
            est = self.estimate_tokens(body, row)
            reserve = self.cost(*est)  # requests in flight count against the budget too
            if self.over_budget(self._reserved + reserve):
                raise BudgetReached
            self._reserved += reserve
            self._inflight[key] = sent = asyncio.Event()
            try:
                again = "" if reply is None else "-" + hashlib.sha256(json.dumps(reply).encode()).hexdigest()[:8]
                reply = await self._send(body, key, est, again)
                usage = reply["usage"]
                cost = self.cost(usage["prompt_tokens"], usage["completion_tokens"])
                self.cache.put(key, self.cfg.model, reply, cost)
                self.this_run.add(key)
                self.account(self.stats, usage, cost)
                return reply, cost, False
            except FormatRefused as e:
                if self._format() == mode:  # concurrent refusals downgrade once
                    self._downgrade(str(e))
                continue
            finally:
                self._reserved -= reserve
                del self._inflight[key]
                sent.set()

    def _format(self) -> str:
        return self.mode + (" with the schema" if self.object_schema else "")

    def _downgrade(self, why: str) -> None:
        old = self._format()
        if self.mode == "json_schema":  # the schema again, in the json_object form llama.cpp's server takes
            self.mode, self.object_schema = "json_object", True
        elif self.object_schema:
            self.object_schema = False
        else:
            self.mode = MODES[MODES.index(self.mode) + 1]
        self.cache.meta(self._format_note, json.dumps([self.mode, self.object_schema]))
        tqdm.write(f"teacher: the endpoint refused response_format {old} ({why[:100]}); using {self._format()}",
                   file=sys.stderr)

    # -- one row ------------------------------------------------------------------------------
    def _record(self, row: dict) -> dict:
        record = {"id": row["id"], "text": row["text"], "label": None, "confidence": None,
                  "confidence_source": None, "entity_confidence": None, "error": None, "raw": None,
                  "source": "teacher", "model": self.cfg.model, "simulated": self.simulated,
                  "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "requests": 0,
                  "cached": True, "time": None}
        # what the record must keep from the row: NER's words, the labels offered (task.shortlist),
        # the label a judge or author question was about, and a caller's own provenance
        record.update({k: row[k] for k in ("tokens", "shortlist", "asked", "meta") if k in row})
        return record

    async def _label_row(self, row: dict) -> dict:
        record = self._record(row)
        messages = self.messages(row)
        for ask in range(self.cfg.reask + 1):
            try:
                reply, cost, cached = await self._complete(messages, row)
            except RequestFailed as e:
                record["error"], record["raw"] = e.kind, None
                break
            self.stats["reasks"] += ask > 0
            record["requests"] += 1
            record["cached"] = record["cached"] and cached
            record["cost_usd"] += cost
            record["prompt_tokens"] += reply["usage"]["prompt_tokens"]
            record["completion_tokens"] += reply["usage"]["completion_tokens"]
            error = self._read(reply, row, record)
            if error is None:
                break
            record["error"] = error.kind
            messages = [*messages, {"role": "assistant", "content": record["raw"] or ""},
                        {"role": "user", "content": self.reask.format(error=error)}]
        record["cached"] = record["requests"] > 0 and record["cached"]
        record["time"] = round(time.time(), 3)
        return record

    def _valid(self, reply: dict, row: dict) -> bool:
        """Whether some choice of a reply parses into an answer."""
        for choice in reply["choices"]:
            try:
                self.task.parse_teacher(choice["content"], row, choice=self.choice)
                return True
            except OutputError:
                pass
        return False

    def _read(self, reply: dict, row: dict, record: dict) -> OutputError | None:
        """Parse the reply's choices into the record; the validation error when none is valid."""
        labels, errors = [], []
        for choice in reply["choices"]:
            try:
                labels.append((self.task.parse_teacher(choice["content"], row, choice=self.choice), choice))
            except OutputError as e:
                errors.append(e)
        if not labels:
            record["raw"] = clip(reply["choices"][0]["content"], RAW_CHARS) if reply["choices"] else None
            return errors[0] if errors else OutputError("empty_output", "the reply has no choices")
        record["raw"] = clip(labels[0][1]["content"], RAW_CHARS)
        record["error"] = None
        if len(reply["choices"]) > 1:  # self-consistency: majority vote, agreement as confidence
            record["label"], record["confidence"], record["entity_confidence"] = self.task.vote(
                [label for label, _ in labels], len(reply["choices"]), row)
            record["confidence_source"] = "agreement"
        else:
            label, choice = labels[0]
            record["label"] = label
            if choice["logprobs"]:
                record["confidence"], record["entity_confidence"] = self.task.logprob_confidence(
                    choice["content"], choice["logprobs"], label, row)
                record["confidence_source"] = "logprobs"
        return None

    # -- many rows ----------------------------------------------------------------------------
    def _new_stats(self) -> dict:
        return {"rows": 0, "billed": 0, "cache_hits": 0, "retries": 0, "reasks": 0, "errors": {},
                "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0, "stopped": None}

    async def _run(self, rows: list[dict], sink, bar) -> None:
        self._clients = [None] * len(self._keys)  # made on first use: a run served from cache needs none
        self._pool = KeyPool(self._keys)
        self._rpm, self._tpm = TokenBucket(self.cfg.rpm), TokenBucket(self.cfg.tpm)
        self._reserved = 0.0
        self._inflight: dict[str, asyncio.Event] = {}  # request key -> set once its reply is cached
        todo = iter(rows)
        errors: Counter = Counter()

        async def worker():
            for row in todo:
                if self.stats["stopped"]:
                    return
                try:
                    record = await self._label_row(row)
                except NotCached:
                    continue
                except BudgetReached:
                    self.stats["stopped"] = "budget"
                    return
                sink(record)
                self.stats["rows"] += 1
                if record["error"]:
                    errors[record["error"]] += 1
                bar.update()
                bar.set_postfix(spent=f"${self.spent_before + self.spent:.4f}", cached=self.stats["cache_hits"],
                                retries=self.stats["retries"], errors=sum(errors.values()), refresh=False)

        try:
            await asyncio.gather(*(worker() for _ in range(self.cfg.concurrency)))
        finally:
            self.stats["errors"] = dict(errors)
            for client in filter(None, self._clients):
                await client.close()

    def label_records(self, rows) -> list[dict]:
        """Label rows in memory and return their records in input order."""
        out: dict[str, dict] = {}
        with tqdm(total=len(rows), disable=True) as bar:
            asyncio.run(self._run(list(rows), lambda r: out.__setitem__(r["id"], r), bar))
        return [out[r["id"]] for r in rows if r["id"] in out]

    def label(self, rows, out_path: Path, desc: str = "teacher") -> dict:
        """Label every row of `rows` not yet in `out_path` (JSONL); return this call's stats."""
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        # drop a torn last line, rows the endpoint failed, and the asked rows whose answer an earlier
        # run judged invalid (asked again); keep valid rows, other rows, and this run's invalid ones
        wanted = {r["id"] for r in rows}
        done = [r for r in read_jsonl(out_path) if finished(r) or r["id"] in self.settled
                or (r["id"] not in wanted and invalid(r))]
        write_atomic(out_path, "".join(json.dumps(r) + "\n" for r in done))
        done_ids = {r["id"] for r in done}
        todo = [r for r in rows if r["id"] not in done_ids]
        self.stats = self._new_stats()
        with open(out_path, "a", encoding="utf-8") as f, \
                tqdm(total=len(rows), initial=len(rows) - len(todo), desc=desc, unit="row") as bar:
            def sink(record):
                f.write(json.dumps(record) + "\n")
                f.flush()
                if invalid(record):
                    self.settled.add(record["id"])
            asyncio.run(self._run(todo, sink, bar))
        return dict(self.stats)


def label_summary(records: list[dict]) -> dict:
    """Counts for a label file: rows, valid labels, invalid answers (asked again on a rerun), rows
    that billed a request and rows answered from the cache alone, error types, tokens and USD spent."""
    errors = Counter(r["error"] for r in records if r["error"])
    return {"rows": len(records), "labeled": sum(r["label"] is not None for r in records),
            "invalid": sum(map(invalid, records)),
            "billed": sum(bool(r.get("requests")) and not r.get("cached") for r in records),
            "cached": sum(bool(r.get("requests")) and bool(r.get("cached")) for r in records),
            "errors": dict(errors),
            "prompt_tokens": sum(r["prompt_tokens"] for r in records),
            "completion_tokens": sum(r["completion_tokens"] for r in records),
            "cost_usd": round(sum(r.get("cost_usd") or 0.0 for r in records), 6)}


def answers_line(what: str, records: list[dict]) -> str:
    """One line on the teacher's answers to some rows: usable, invalid (asked again on the next
    run), failed."""
    s = label_summary(records)
    line = f"teacher: {what}: {s['labeled']} of {s['rows']} rows answered"
    if s["invalid"]:
        line += f", {s['invalid']} answers invalid (asked again on the next run)"
    if failed := s["rows"] - s["labeled"] - s["invalid"]:
        line += f", {failed} requests failed (retried on the next run)"
    if s["errors"]:
        line += " [" + ", ".join(f"{k} {n}" for k, n in sorted(s["errors"].items())) + "]"
    return line
