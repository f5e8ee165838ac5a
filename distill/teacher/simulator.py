"""A simulated teacher: an OpenAI-compatible HTTP server on loopback that answers from gold.

It serves `POST /v1/chat/completions` (and `GET /v1/models`). The last user message is looked up
among the rows it was given; the task's noise model turns that row's gold label into the answer
(right with probability `accuracy`, else a confusion, or for NER a missed, retyped or mis-bounded
entity). Token logprobs come back when asked for: confident when right, less so when wrong. The
same text always gets the same answer, so caches and reruns agree.

Serve one by hand:  distill simulate recipe=demo teacher.sim.port=8000
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from distill.tasks import Task

_TOKEN = re.compile(r"\w+|[^\w\s]|\s+")


def _logprobs(content: str, confidence: float) -> dict:
    """Token logprobs whose product is `confidence`: the first word after the first ':' carries it."""
    tokens, carrier = _TOKEN.findall(content), None
    colon = content.find(":")
    pos = 0
    for i, tok in enumerate(tokens):
        if carrier is None and pos > colon and tok.strip() and re.match(r"\w", tok):
            carrier = i
        pos += len(tok)
    carrier = 0 if carrier is None else carrier
    return {"content": [{"token": t, "logprob": math.log(confidence) if i == carrier else 0.0,
                         "bytes": list(t.encode()), "top_logprobs": []} for i, t in enumerate(tokens)]}


class Simulator:
    """Serve `rows` (dicts with `text`/`tokens` and gold `label`) as a noisy teacher model."""

    def __init__(self, task: Task, rows, sim, model: str = "simulated-teacher"):
        self.task, self.sim, self.model = task, sim, model
        self.rows = {task.user_message(r): r for r in rows if r.get("label") is not None}
        self.billed = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", int(sim.get("port", 0) or 0)), self._handler())
        self.server.daemon_threads = True
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict) -> dict:
        user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
        row = self.rows.get(user)
        seed = hashlib.sha256(f"{self.sim.get('seed', 0)}\x00{user}".encode()).digest()
        rng = random.Random(seed)
        if row is None:
            content, confidence = "{}", 0.5  # a text it has no gold for: an answer without the field
        else:
            answer, right = self.task.simulate(row["label"], row, rng, self.sim)
            content = json.dumps(answer)
            confidence = rng.uniform(0.75, 0.995) if right else rng.uniform(0.3, 0.8)
            if rng.random() < self.sim.get("malformed_rate", 0.0):
                content = content[: len(content) // 2]
        prompt_chars = sum(len(m["content"] or "") for m in body["messages"])
        choice = {"index": 0, "message": {"role": "assistant", "content": content},
                  "finish_reason": "stop", "logprobs": None}
        if body.get("logprobs"):
            choice["logprobs"] = _logprobs(content, confidence)
        with self._lock:
            self.billed += 1
        return {
            "id": "chatcmpl-" + seed.hex()[:24], "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", self.model), "choices": [choice],
            "usage": {"prompt_tokens": prompt_chars // 4 + 1, "completion_tokens": len(content) // 4 + 1,
                      "total_tokens": prompt_chars // 4 + len(content) // 4 + 2},
        }

    def _handler(self):
        sim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": sim.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if not body.get("messages"):
                    return self._send(400, {"error": {"message": "messages is required", "type": "invalid_request_error"}})
                self._send(200, sim.answer(body))

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


def serve(cfg) -> None:
    """`distill simulate recipe=NAME [teacher.sim.port=8000]`: serve the recipe's gold until Ctrl-C."""
    from distill.data import load_split
    from distill.tasks import build_task
    from distill.teach import prepare_data

    task = build_task(cfg.task)
    prepare_data(cfg)
    rows = [*load_split(cfg, "gold", task, labels=True), *load_split(cfg, "seed", task)]
    sim = Simulator(task, rows, cfg.teacher.sim, cfg.teacher.model)
    print(f"simulated teacher for recipe {cfg.recipe!r} at {sim.base_url} (Ctrl-C stops)", flush=True)
    try:
        sim.server.serve_forever()
    except KeyboardInterrupt:
        sim.server.server_close()
