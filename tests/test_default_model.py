"""The embedded default model folder: plain (trainable) weights, chat template, a real reply."""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_default_model_is_a_plain_bf16_folder(default_model_dir):
    config = json.loads((default_model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama" and config["dtype"] == "bfloat16"
    assert (default_model_dir / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(default_model_dir)
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    assert 130e6 < model.num_parameters() < 140e6


def test_default_model_replies_through_its_chat_template(default_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # float32, as the transformers engine loads it on a CPU: in the folder's bf16 the reply's first two candidate
    # tokens lie 0.01 apart in logit, and which one wins depends on the machine's bf16 kernels
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    messages = [{"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and "You are a concise assistant." in prompt
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
    assert "Paris" in reply
    assert reply.endswith("<|im_end|>")  # stopped on its own end-of-turn token


def test_default_model_trains(default_model_dir):
    """The GGUF quantization marker is gone: a backward pass works and updates weights."""
    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    batch = tokenizer(["Creatinine 1.4 mg/dL on admission."], return_tensors="pt")
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_tiny_model_shares_the_tokenizer(tiny_model_dir, default_model_dir):
    tiny = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tiny.num_parameters() < 5e6
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(default_model_dir).get_vocab()
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(default_model_dir).chat_template


def test_default_tokenizer_is_plain_byte_level(default_model_dir):
    """SmolLM2's own decoder, not the GGUF rebuild's chain: vLLM's xgrammar picks the vocabulary type from it
    (byte-fallback let newline tokens into JSON strings); text in and out is unchanged."""
    tokenizer_json = json.loads((default_model_dir / "tokenizer.json").read_text())
    assert tokenizer_json["decoder"]["type"] == "ByteLevel" and tokenizer_json["model"]["byte_fallback"] is False
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    text = "Creatinine 1.4 mg/dL\n\tdéjà vu — 日本語 🙂  two  spaces"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer("a\nb", add_special_tokens=False)["input_ids"]) == ["a", "Ċ", "b"]
