"""Random-weight Llama models of the real shapes, for throughput benchmarks (speed depends on shapes, not values).

No real Llama weights are needed to measure tokens/s: a model of the same shape with random weights
does the same work. The tokenizer is the embedded model's, padded with reserved tokens to Llama 3's
128,256-entry vocabulary so that every id such a model emits decodes.
"""

from __future__ import annotations

from pathlib import Path

from clinical_distil.default_model import DEFAULT_MODEL_DIR
from clinical_distil.files import InputError

LLAMA_SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "llama-3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    "llama-3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}
LLAMA3_VOCAB = 128256


def build_random_model(shape: str, output_dir: str | Path, tokenizer_dir: str | Path = DEFAULT_MODEL_DIR,
                       weights: bool = True, device: str = "cpu", seed: int = 0) -> Path:
    """A random-weight Llama of a real shape with a 128,256-entry vocabulary.

    The tokenizer is the default model's, padded with reserved tokens to Llama 3's vocabulary
    size so that every id the model can emit decodes. With `weights=False` only config and
    tokenizer are written (enough for vLLM's load_format="dummy").
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if shape not in LLAMA_SHAPES:
        raise InputError(f"unknown model shape {shape!r}; choose from {', '.join(LLAMA_SHAPES)}")
    output_dir = Path(output_dir)
    if (output_dir / "config.json").exists() and (not weights or any(output_dir.glob("*.safetensors"))):
        return output_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.add_tokens([f"<|reserved_{index}|>" for index in range(LLAMA3_VOCAB - len(tokenizer))])
    config = LlamaConfig(vocab_size=LLAMA3_VOCAB, max_position_embeddings=131072, rope_theta=500000.0,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, dtype="bfloat16", **LLAMA_SHAPES[shape])
    output_dir.mkdir(parents=True, exist_ok=True)
    if weights:
        torch.manual_seed(seed)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(output_dir)
        del model
    else:
        config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir
