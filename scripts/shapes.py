"""Random models at the shapes of real students, saved as ordinary model directories.

The benchmarks measure speed, which depends on a model's shape, not on its weights, and this
machine has no model hub. Each directory holds a model of one real student's shape with random
weights and a word-level tokenizer trained on the benchmark's texts (about one token per word, as a
real subword tokenizer gives for plain English); `student.model=DIR` then loads it like a download.

- encoder: all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 12 heads, 22M parameters)
- seq2seq: t5-base (12 + 12 layers, 768 wide, feed-forward 3072, 12 heads, 223M)
- causal: SmolLM2-135M (Llama, 30 layers, 576 wide, 9 heads with 3 key/value heads, 135M)
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import processors
from transformers import BertConfig, LlamaConfig, T5Config

from distill.students.encoder import EncoderStudent

SHAPES = {
    "encoder": {"name": "all-MiniLM-L6-v2", "config": "student=tiny_encoder"},
    "seq2seq": {"name": "t5-base", "config": "student=tiny_t5"},
    "causal": {"name": "SmolLM2-135M", "config": "student=tiny_causal"},
}


def tokenizer(texts: list[str], kind: str = "encoder"):
    """A word-level tokenizer of the texts. BERT's wraps a text in [CLS] ... [SEP]; for T5 and
    Llama shapes [SEP] is the end of text, appended alone as T5's tokenizer appends </s> (the
    causal student strips it from prompts)."""
    tok = EncoderStudent.tiny_tokenizer(texts)
    tok.eos_token = "[SEP]"
    if kind != "encoder":
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="$A [SEP]", special_tokens=[("[SEP]", tok.convert_tokens_to_ids("[SEP]"))])
    return tok


def config(kind: str, tok):
    special = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    if kind == "encoder":
        return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                          intermediate_size=1536, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    if kind == "seq2seq":
        return T5Config(vocab_size=32128, d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12,
                        num_heads=12, feed_forward_proj="relu", dropout_rate=0.1,
                        decoder_start_token_id=tok.pad_token_id, **special)
    if kind == "causal":
        return LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                           num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                           rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=None,
                           **special)
    raise ValueError(f"unknown shape {kind!r}; choose one of: {', '.join(SHAPES)}")


def write_model(kind: str, out_dir: Path, texts: list[str], model_class=None, **model_kwargs) -> Path:
    """A random model of the kind's shape and its tokenizer, saved in out_dir (reused when there).
    `model_class` picks the head (default: the kind's LM; for encoders the bare encoder, as the hub
    checkpoint is, so the student's `from_pretrained` adds a head with the task's number of labels)."""
    import shutil

    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    tok = tokenizer(texts, kind)
    cls = model_class or {"encoder": AutoModel, "seq2seq": AutoModelForSeq2SeqLM, "causal": AutoModelForCausalLM}[kind]
    cfg = config(kind, tok)
    for k, v in model_kwargs.items():
        setattr(cfg, k, v)
    model = cls.from_config(cfg)
    # written beside and renamed: an interrupted write never leaves a config.json that looks complete
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tok.save_pretrained(partial)
    partial.rename(out_dir)
    return out_dir
