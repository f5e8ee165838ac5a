"""A simulated teacher: an OpenAI-compatible HTTP server on loopback that answers from gold.

Routes: `POST /v1/chat/completions`, `GET /v1/models`, and what the Batch API needs:
`POST /v1/files`, `GET /v1/files/{id}[/content]`, `POST /v1/batches`, `GET /v1/batches[/{id}]`.
`GET /v1/sim/stats` reports what it has billed.

The last user message is looked up among the rows it was given; the task's noise model turns that
row's gold label into the answer (right with probability `accuracy`, else a confusion, or for NER
a missed, retyped or mis-bounded entity). `teacher.sim.noise=uniform` spreads mistakes at random;
`realistic` puts them on the rows a weak model finds hard and points them where it points, with
confidences that separate right from wrong only at `teacher.sim.auroc` (see distill/tasks/noise.py).
Token logprobs come back when asked for (per entity for NER). The same request gets the same answer.
A shortlisted prompt (task.shortlist) is answered from the labels it offers. The grow loop's
questions are answered too: a judge's yes/no from the label the teacher believes the text has,
an author's texts from an author pool of real labeled texts held out from corpus and gold, with
`teacher.sim.author_off_topic` of them from another label.

Faults, all off by default (`teacher.sim.*`): `latency` seconds per reply; `rate_limit` requests/s
above which it answers 429 with `Retry-After`; `error_rate` random 500s; `drop_rate` connections
closed without a reply; `malformed_rate` replies cut into invalid JSON; `output_modes` the
response_format types it accepts (400 otherwise); `key_faults` {api key: invalid | rate_limited}.
A request is billed when its reply is sent; one that repeats an `Idempotency-Key` is answered
from memory and not billed again.

Serve one by hand:  distill simulate recipe=demo teacher.sim.port=8000
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from distill.data import text_key
from distill.tasks import Task
from distill.teacher.cache import request_key
from distill.teacher.client import prices, usd
from distill.tasks.noise import confidence

_TOKEN = re.compile(r"\w+|[^\w\s]|\s+")


def key_id(api_key: str) -> str:
    """How the simulator names an API key in its stats (never the key itself)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


def _logprobs(content: str, units: list[tuple[int, int, float]], whole: float) -> dict:
    """Token logprobs: each unit's first word carries its confidence, the first token `whole`."""
    tokens, pos, offsets = _TOKEN.findall(content), 0, []
    for tok in tokens:
        offsets.append(pos)
        pos += len(tok)
    lps = [0.0] * len(tokens)
    if tokens:
        lps[0] = math.log(whole)
    for start, end, conf in units:
        carrier = next((i for i, (o, t) in enumerate(zip(offsets, tokens))
                        if start <= o < end and re.match(r"\w", t)), None)
        if carrier is not None:
            lps[carrier] += math.log(conf)
    return {"content": [{"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                        for t, lp in zip(tokens, lps)]}


class Simulator:
    """Serve `rows` (dicts with `text`/`tokens` and gold `label`) as a noisy teacher model."""

    def __init__(self, task: Task, rows, sim, model: str = "simulated-teacher"):
        """`rows`: a list, or {group: rows} (gold, seed pool) when realistic noise should hit the
        accuracy exactly within each group."""
        self.task, self.model = task, model
        self.sim = dict(sim)
        groups, seen = {}, set()
        for name, group in (rows.items() if isinstance(rows, dict) else [("rows", rows)]):
            # a text in two groups (a corpus that is also the seed pool) counts in the first only
            groups[name] = [r for r in group if r.get("label") is not None and task.user_message(r) not in seen]
            seen.update(map(task.user_message, groups[name]))
        self.rows = {task.user_message(r): r for group in groups.values() for r in group}
        # texts that come back with their spacing collapsed (the author's, once parsed) still find their row
        self.spaced = {text_key(k): k for k in self.rows}
        self.pool: dict[str, list[str]] = {}  # label -> texts the author answers with (distill grow)
        for r in rows.get("author_pool", []) if isinstance(rows, dict) else []:
            if isinstance(r.get("label"), str):  # one label per text: the tasks distill grow serves
                self.pool.setdefault(r["label"], []).append(r["text"])
        noise = self.sim.get("noise") or "uniform"
        # realistic: which rows (or entities) the teacher gets wrong, and how, decided up front
        self.realistic = noise == "realistic"
        self.plan = task.noise_plan(groups, self.sim) if self.realistic else {}
        self.billed = 0  # chat completions answered and billed
        self.billed_tokens = [0, 0]  # prompt, completion tokens of those
        self.billed_by_request: Counter = Counter()  # idempotency key (or body hash) -> times billed
        self.batch_billed = 0  # batch lines answered (half price on OpenAI)
        self.requests_by_key: Counter = Counter()  # key_id(api key) -> requests seen
        self.faults: Counter = Counter()  # fault name -> times injected
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._replies: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._fault_rng = random.Random(self.sim.get("seed", 0))
        rate = self.sim.get("rate_limit")
        self._bucket = [float(rate or 0), time.monotonic()]  # tokens, last refill
        self.server = ThreadingHTTPServer(("127.0.0.1", int(self.sim.get("port", 0) or 0)), self._handler())
        self.server.daemon_threads = True
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stats(self) -> dict:
        with self._lock:
            price = prices(self.model)
            return {"billed": self.billed, "batch_billed": self.batch_billed,
                    "billed_prompt_tokens": self.billed_tokens[0], "billed_completion_tokens": self.billed_tokens[1],
                    "billed_usd": usd(price, *self.billed_tokens) if price else None,
                    "duplicate_billed": sum(c - 1 for c in self.billed_by_request.values()),
                    "requests_by_key": dict(self.requests_by_key), "faults": dict(self.faults)}

    # -- answers ------------------------------------------------------------------------------
    def answer(self, body: dict) -> dict:
        # the text to label: the latest user turn it has a row for (a re-ask comes after it)
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        user = next(filter(None, map(self._key, reversed(users))), users[-1] if users else "")
        row = self.rows.get(user)
        n = int(body.get("n") or 1)
        sampled = n > 1 and (body.get("temperature") or 0) > 0
        text_mode = (body.get("response_format") or {}).get("type") in (None, "text")
        # what was asked, from the request's metadata (a request without it: labeling, in JSON)
        meta = body.get("metadata") or {}
        asked = meta.get("distill_request", "label")
        plain = text_mode and meta.get("answer") == "choice"  # the bare label, in a sentence
        offered = json.loads(meta["shortlist"]) if meta.get("shortlist") and row is not None else None
        choices, prompt_chars, completion_chars = [], sum(len(m["content"] or "") for m in body["messages"]), 0
        for i in range(n):
            # the same request always gets the same answer; samples differ when temperature > 0
            salt = f"{self.sim.get('seed', 0)}\x00{len(body['messages'])}\x00{user}" + (f"\x00{i}" if sampled else "")
            rng = random.Random(hashlib.sha256(salt.encode()).digest())
            if asked in ("judge", "author"):  # the grow loop's questions
                content, units, whole = (self._judge if asked == "judge" else self._author)(meta, rng)
                plain = asked == "judge"
            elif row is None:
                content, units, whole = "{}", [], 0.5  # no gold for this text: a reply without the field
            else:
                answer, right, unit_right = self.task.simulate(row["label"], row, rng, self.sim, self.plan.get(user),
                                                               resample=sampled and i > 0)
                if offered is not None and answer["label"] not in offered:
                    # a shortlist without its planned answer: right when gold was offered, else its first label
                    right = row["label"] in offered
                    answer, unit_right = {"label": row["label"] if right else offered[0]}, [right]
                if self.task.rationale:
                    answer = {"rationale": self.task.simulated_rationale(answer, row), **answer}
                content = json.dumps(answer)
                confs = [self._confidence(ok, rng) for ok in unit_right]
                units = [(s, e, c) for (s, e), c in zip(self.task.confidence_spans(content), confs)]
                whole = 0.7 if not right and all(unit_right) else 1.0  # e.g. an entity it missed
                if plain:
                    content = f"The answer is {answer['label']}."
                    units = [(14, 14 + len(answer["label"]), c) for c in confs]
                if rng.random() < self.sim.get("malformed_rate", 0.0):
                    content, units = content[: len(content) // 2], []
            if text_mode and not plain:  # no JSON mode: the answer comes wrapped in prose
                prefix = "Sure. Here is the answer:\n```json\n"
                content = prefix + content + "\n```"
                units = [(s + len(prefix), e + len(prefix), c) for s, e, c in units]
            choice = {"index": i, "message": {"role": "assistant", "content": content},
                      "finish_reason": "stop", "logprobs": None}
            if body.get("logprobs"):
                choice["logprobs"] = _logprobs(content, units, whole)
            choices.append(choice)
            completion_chars += len(content)
        return {
            "id": "chatcmpl-" + request_key(body)[:24],
            "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model), "choices": choices,
            "usage": {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": completion_chars // 4 + 1,
                      "total_tokens": prompt_chars // 4 + completion_chars // 4 + 2},
        }

    def _key(self, message: str) -> str | None:
        """The row key a user message or text stands for, whatever its spacing."""
        return message if message in self.rows else self.spaced.get(text_key(message))

    def _judge(self, asked: dict, rng: random.Random) -> tuple[str, list, float]:
        """yes or no: whether the label the teacher believes the text has is the one asked about.
        Realistic noise: its belief is its planned answer (wrong on the rows it would mislabel);
        uniform: gold, else another label, at `accuracy`."""
        row, label = self.rows.get(self._key(asked.get("text", ""))), asked.get("label")
        if row is None:
            return "no", [(0, 2, 0.5)], 1.0  # a text it has no gold for
        plan = self.plan.get(self.task.user_message(row))
        if plan is not None:
            belief = plan["answer"] if plan["wrong"] else row["label"]
        elif rng.random() < self.sim["accuracy"]:
            belief = row["label"]
        else:
            belief = rng.choice([lab for lab in self.task.labels if lab != row["label"]])
        word = "yes" if belief == label else "no"
        return word, [(0, len(word), self._confidence(belief == row["label"], rng))], 1.0

    def _author(self, asked: dict, rng: random.Random) -> tuple[str, list, float]:
        """Real texts of the label from the author pool (held out from corpus and gold), the
        shorter or the longer half as asked; `author_off_topic` of them belong to another label."""
        label, n = asked.get("label"), int(asked.get("texts") or 1)
        pool = self.pool.get(label) or []
        if pool:
            middle = sorted(len(t.split()) for t in pool)[len(pool) // 2]
            long = asked.get("length") == "long"
            pool = [t for t in pool if (len(t.split()) > middle) == long] or pool
        texts = rng.sample(pool, min(n, len(pool)))
        others = [lab for lab in self.pool if lab != label]
        for k in range(len(texts)):
            if others and rng.random() < self.sim.get("author_off_topic", 0.0):
                texts[k] = rng.choice(self.pool[rng.choice(others)])
        subtopic = f"{label.replace('_', ' ')}, case {rng.randint(1, 99)}"
        return json.dumps({"subtopic": subtopic, "texts": texts}), [], 1.0

    def _confidence(self, right: bool, rng: random.Random) -> float:
        """One answer unit's confidence. Uniform noise: right answers confident, wrong ones less
        so, barely overlapping; realistic: overlapping, at AUROC `teacher.sim.auroc`."""
        if self.realistic:
            return confidence(right, rng, self.sim.get("auroc", 0.8), self.sim["accuracy"])
        return rng.uniform(0.75, 0.995) if right else rng.uniform(0.3, 0.8)

    # -- faults -------------------------------------------------------------------------------
    def _rate_wait(self) -> float:
        """0 when a request may pass the rate limit now, else the seconds until it could."""
        rate = self.sim.get("rate_limit")
        if not rate:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._bucket[0] = min(rate, self._bucket[0] + (now - self._bucket[1]) * rate)
            self._bucket[1] = now
            if self._bucket[0] >= 1:
                self._bucket[0] -= 1
                return 0.0
            return (1 - self._bucket[0]) / rate

    def _roll(self, name: str) -> bool:
        rate = self.sim.get(name) or 0.0
        with self._lock:
            hit = rate > 0 and self._fault_rng.random() < rate
            if hit:
                self.faults[name] += 1
        return hit

    # -- batches ------------------------------------------------------------------------------
    def _run_batch(self, batch_id: str) -> None:
        time.sleep(self.sim.get("batch_seconds", 0.5))
        batch = self.batches[batch_id]
        lines = self.files[batch["input_file_id"]]["data"].decode().splitlines()
        out, done, failed = [], 0, 0
        for line in filter(str.strip, lines):
            request = json.loads(line)
            if self._roll("error_rate"):  # a failed line: not billed, asked again in a later batch
                failed += 1
                response = {"status_code": 500, "body": {"error": {"message": "server error"}}}
            else:
                done += 1
                response = {"status_code": 200, "body": self.answer(request["body"])}
            out.append({"id": f"batch_req_{len(out)}", "custom_id": request["custom_id"],
                        "response": response, "error": None})
        output = self._add_file("batch_output.jsonl", "batch_output", "\n".join(map(json.dumps, out)).encode())
        with self._lock:
            self.batch_billed += done
        batch.update(status="completed", output_file_id=output["id"], completed_at=int(time.time()),
                     request_counts={"total": len(out), "completed": done, "failed": failed})

    def _add_file(self, filename: str, purpose: str, data: bytes) -> dict:
        with self._lock:
            file_id = f"file-{len(self.files) + 1:06d}"
            self.files[file_id] = {"data": data, "object": {
                "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}}
        return self.files[file_id]["object"]

    # -- HTTP ---------------------------------------------------------------------------------
    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _send(self, status: int, payload, headers: dict | None = None) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, kind: str, headers: dict | None = None) -> None:
                self._send(status, {"error": {"message": message, "type": kind, "code": None}}, headers)

            def do_GET(self):
                path = self.path.split("?")[0].rstrip("/")
                parts = path.split("/")
                if path.endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": sim.model, "object": "model"}]})
                if path.endswith("/sim/stats"):
                    return self._send(200, sim.stats())
                if "/files/" in path and parts[-1] == "content" and parts[-2] in sim.files:
                    return self._send(200, sim.files[parts[-2]]["data"])
                if "/files/" in path and parts[-1] in sim.files:
                    return self._send(200, sim.files[parts[-1]]["object"])
                if path.endswith("/batches"):
                    data = sorted(sim.batches.values(), key=lambda b: b["id"], reverse=True)
                    return self._send(200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": data[0]["id"] if data else None,
                                            "last_id": data[-1]["id"] if data else None})
                if "/batches/" in path and parts[-1] in sim.batches:
                    return self._send(200, sim.batches[parts[-1]])
                self._error(404, f"no route {self.path}", "invalid_request_error")

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/files"):
                    return self._upload(raw)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._error(400, "the request body is not JSON", "invalid_request_error")
                if path.endswith("/batches"):
                    return self._create_batch(body)
                if not path.endswith("/chat/completions"):
                    return self._error(404, f"no route {self.path}", "invalid_request_error")
                self._chat(body)

            def _chat(self, body: dict) -> None:
                api_key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                with sim._lock:
                    sim.requests_by_key[key_id(api_key)] += 1
                fault = (sim.sim.get("key_faults") or {}).get(api_key)
                if fault == "invalid":
                    return self._error(401, "Incorrect API key provided.", "invalid_request_error")
                if fault == "rate_limited":
                    return self._error(429, "Rate limit reached for this key.", "requests",
                                       {"Retry-After": "30", "retry-after-ms": "30000"})
                wait = sim._rate_wait()
                if wait > 0:
                    with sim._lock:
                        sim.faults["rate_limit"] += 1
                    return self._error(429, "Rate limit reached: requests per second.", "requests",
                                       {"Retry-After": str(math.ceil(wait)), "retry-after-ms": f"{wait * 1000:.0f}"})
                if sim._roll("drop_rate"):
                    self.close_connection = True  # hang up without a reply
                    return
                if sim._roll("error_rate"):
                    return self._error(500, "The server had an error while processing your request.", "server_error")
                if not body.get("messages"):
                    return self._error(400, "messages is required", "invalid_request_error")
                mode = (body.get("response_format") or {}).get("type", "text")
                if mode not in sim.sim.get("output_modes", ("json_schema", "json_object", "text")):
                    return self._error(400, f"response_format {mode} is not supported by this model",
                                       "invalid_request_error")
                time.sleep(sim.sim.get("latency", 0.0))
                idempotency = self.headers.get("Idempotency-Key")
                with sim._lock:
                    reply = sim._replies.get(idempotency) if idempotency else None
                if reply is None:
                    reply = sim.answer(body)
                    with sim._lock:
                        if idempotency:
                            sim._replies[idempotency] = reply
                        sim.billed += 1
                        sim.billed_tokens[0] += reply["usage"]["prompt_tokens"]
                        sim.billed_tokens[1] += reply["usage"]["completion_tokens"]
                        sim.billed_by_request[idempotency or request_key(body)] += 1
                self._send(200, reply)

            def _upload(self, raw: bytes) -> None:
                ctype = self.headers.get("Content-Type", "")
                msg = email.parser.BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
                fields = {part.get_param("name", header="content-disposition"): part for part in msg.get_payload()} \
                    if msg.is_multipart() else {}
                if "file" not in fields:
                    return self._error(400, "a multipart 'file' field is required", "invalid_request_error")
                purpose = (fields.get("purpose").get_payload(decode=True) or b"").decode() if "purpose" in fields else ""
                self._send(200, sim._add_file(fields["file"].get_filename() or "upload.jsonl", purpose,
                                              fields["file"].get_payload(decode=True)))

            def _create_batch(self, body: dict) -> None:
                if body.get("input_file_id") not in sim.files:
                    return self._error(400, f"no file {body.get('input_file_id')!r}", "invalid_request_error")
                with sim._lock:
                    batch_id = f"batch_{len(sim.batches) + 1:06d}"
                    sim.batches[batch_id] = batch = {
                        "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
                        "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window"),
                        "status": "in_progress", "output_file_id": None, "error_file_id": None,
                        "created_at": int(time.time()), "in_progress_at": int(time.time()),
                        "metadata": body.get("metadata"), "errors": None,
                        "request_counts": {"total": 0, "completed": 0, "failed": 0}}
                threading.Thread(target=sim._run_batch, args=(batch_id,), daemon=True).start()
                self._send(200, batch)

            def log_message(self, *args):  # keep request lines out of the user's console
                pass

        return Handler

    def start(self) -> "Simulator":
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def sim_rows(cfg, task: Task) -> dict:
    """The recipe's rows with labels, to answer from: gold, and seed / corpus where they carry some."""
    from distill.data import load_split

    rows = {"gold": load_split(cfg, "gold", task, labels=True), "seed": load_split(cfg, "seed", task)}
    if cfg.data.corpus.get("label_column"):
        rows["corpus"] = load_split(cfg, "corpus", task)
    # what the author answers with (distill grow): data.author_pool where the recipe has one, else the seed pool
    rows["author_pool"] = load_split(cfg, "author_pool", task, labels=True) if cfg.data.get("author_pool") \
        else rows["seed"]
    return rows  # the simulator keeps those with a label


def serve(cfg) -> None:
    """`distill simulate recipe=NAME [teacher.sim.port=8000]`: serve the recipe's gold until Ctrl-C."""
    from distill.tasks import build_task
    from distill.data import prepare_data

    task = build_task(cfg.task)
    prepare_data(cfg)
    sim = Simulator(task, sim_rows(cfg, task), cfg.teacher.sim, cfg.teacher.model)
    print(f"simulated teacher for recipe {cfg.recipe!r} at {sim.base_url} (Ctrl-C stops)", flush=True)
    try:
        sim.server.serve_forever()
    except KeyboardInterrupt:
        sim.server.server_close()
