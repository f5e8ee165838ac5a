"""OpenAI Batch API mode (`teacher.mode=batch`): the same requests, sent as one file, half price.

Each round runs the labeling pipeline against the cache alone: rows whose replies are all cached
are written out, and the requests still missing are written to JSONL, uploaded and sent as one
batch. Its replies go into the cache; the next round picks them up, and a re-ask of an invalid
answer becomes the next round's request. The batch id is saved beside the output file as soon as
the batch exists, and each batch is tagged with a hash of its requests, so a rerun after a crash
waits for the same batch instead of paying for a new one.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import openai
from tqdm.auto import tqdm

from distill.teacher.client import Teacher, compact

DEAD = {"failed", "expired", "cancelled"}
FINISHED = DEAD | {"completed"}


def _find(client: openai.OpenAI, state_path: Path, job: str):
    """The batch to resume: the one whose id was saved, else one tagged with this job's hash."""
    if state_path.exists():
        return client.batches.retrieve(json.loads(state_path.read_text())["batch_id"])
    for batch in client.batches.list(limit=100).data:
        if (batch.metadata or {}).get("distill_job") == job and batch.status not in DEAD:
            return batch
    return None


def _submit(client: openai.OpenAI, needed: dict, state_path: Path, job: str):
    lines = [json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body})
             for key, body in needed.items()]
    upload = client.files.create(file=("distill-batch.jsonl", "\n".join(lines).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"distill_job": job})
    state_path.write_text(json.dumps({"batch_id": batch.id, "job": job, "requests": len(lines)}))
    return batch


def _wait(client: openai.OpenAI, batch, poll_s: float, desc: str):
    with tqdm(total=batch.request_counts.total if batch.request_counts else None, desc=f"{desc} (batch {batch.id})", unit="req") as bar:
        while batch.status not in FINISHED:
            time.sleep(poll_s)
            batch = client.batches.retrieve(batch.id)
            if batch.request_counts:
                bar.total = batch.request_counts.total
                bar.n = batch.request_counts.completed + batch.request_counts.failed
                bar.set_postfix(status=batch.status)
                bar.refresh()
    return batch


def label_batch(teacher: Teacher, rows, out_path: Path, desc: str = "teacher") -> dict:
    """Label `rows` into `out_path` through the Batch API; return this call's stats."""
    cfg = teacher.cfg
    client = openai.OpenAI(base_url=teacher.base_url, api_key=teacher._keys[0][1], timeout=cfg.timeout,
                           max_retries=cfg.max_retries)
    state_path = Path(out_path).with_suffix(".batch.json")
    totals = teacher._new_stats()
    rounds = cfg.reask + cfg.max_retries + 1
    try:
        for round_ in range(rounds + 1):
            # the last pass writes rows whose requests never came back as failed (a rerun retries them)
            teacher.cache_only, teacher.needed = ("collect" if round_ < rounds else "fail"), {}
            stats = teacher.label(rows, out_path, desc)
            for k in ("rows", "cache_hits", "reasks"):
                totals[k] += stats[k]
            totals["errors"] = stats["errors"]
            if not teacher.needed:
                break
            job = hashlib.sha256("\n".join(sorted(teacher.needed)).encode()).hexdigest()[:16]
            batch = _find(client, state_path, job)
            if batch is None:
                est = [teacher.estimate_tokens(body, {"text": "", "tokens": []}) for body in teacher.needed.values()]
                if teacher.over_budget(teacher.cost(sum(p for p, _ in est), sum(c for _, c in est), cfg.batch_discount)):
                    totals["stopped"] = "budget"
                    break
                batch = _submit(client, teacher.needed, state_path, job)
            batch = _wait(client, batch, cfg.batch_poll_s, desc)
            replies = []
            if batch.output_file_id:
                for line in client.files.content(batch.output_file_id).text.splitlines():
                    if not line.strip():
                        continue
                    item = json.loads(line)
                    response = item.get("response") or {}
                    if response.get("status_code") == 200:  # failed lines are not cached: asked again
                        reply = compact(response["body"])
                        usage = reply["usage"]
                        cost = teacher.cost(usage["prompt_tokens"], usage["completion_tokens"], cfg.batch_discount)
                        replies.append((item["custom_id"], cfg.model, reply, cost))
                        teacher.account(totals, usage, cost)
                        teacher.fresh[item["custom_id"]] = cost
            teacher.cache.put_many(replies)
            state_path.unlink(missing_ok=True)
    finally:
        teacher.cache_only = None
    return totals

