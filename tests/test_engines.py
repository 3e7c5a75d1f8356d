"""The engine's choice of starting vLLM (by the run's decoding steps, or as asked), and the options the vLLM
engine hands to vllm.LLM, checked against a stand-in vllm module (no GPU here)."""

import json
import os
import sys
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_distil.engines import COMPILE_FROM_DECODE_STEPS, DECODE_WAVE, vllm_start_mode
from clinical_distil.files import InputError


@pytest.mark.parametrize("prompts, max_tokens, mode", [
    (96, 4096, "graphs"),             # the 24-note driver run's stage A: one wave of 4,096 steps
    (322, 256, "graphs"),             # the sample evaluation sets: two waves of 256
    (2184, 64, "graphs"),             # the known-answer sets: nine waves of 64
    (400_000, 2048, "on"),            # stage A over 100,000 notes
    (256, 5_000, "on"), (256, 4_999, "graphs"),    # the boundary: one wave
    (257, 2_500, "on"), (257, 2_499, "graphs"),    # two waves
    (0, 100, "graphs"),               # nothing to answer still starts an engine: no compiling
])
def test_auto_compiles_only_long_runs(prompts, max_tokens, mode):
    assert vllm_start_mode("auto", prompts, max_tokens) == mode


@given(st.integers(0, 10**7), st.integers(1, 10**5))
def test_asked_modes_are_obeyed_and_auto_follows_the_steps(prompts, max_tokens):
    for asked in ("on", "graphs", "off"):
        assert vllm_start_mode(asked, prompts, max_tokens) == asked
    waves = max(1, -(-prompts // DECODE_WAVE))
    assert vllm_start_mode("auto", prompts, max_tokens) == (
        "graphs" if waves * max_tokens < COMPILE_FROM_DECODE_STEPS else "on")


def test_unknown_choice_is_one_line():
    with pytest.raises(InputError, match="--vllm_compile must be one of auto, on, graphs, off"):
        vllm_start_mode("sometimes", 1, 1)


@pytest.mark.parametrize("rank, limit", [(1, 1), (4, 8), (8, 8), (9, 16), (64, 64), (65, 128), (300, 320)])
def test_lora_rank_limit_is_the_smallest_vllm_accepts(tmp_path, rank, limit):
    from clinical_distil.vllm_engine import lora_rank_limit

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": rank}))
    assert lora_rank_limit(str(tmp_path)) == limit


@pytest.fixture
def fake_vllm(monkeypatch, tiny_model_dir):
    """A vllm stand-in whose LLM records its arguments and the engine-core setting it started under."""
    made = []

    class LLM:
        def __init__(self, **options):
            self.options, self.in_process = options, os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=2048))
            made.append(self)

        def get_tokenizer(self):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(tiny_model_dir)

    class Config:
        def __init__(self, **fields):
            self.fields = fields

    vllm = types.ModuleType("vllm")
    vllm.LLM = LLM
    config = types.ModuleType("vllm.config")
    config.CompilationConfig = Config
    config.CompilationMode = types.SimpleNamespace(NONE="none")
    config.CUDAGraphMode = types.SimpleNamespace(FULL_DECODE_ONLY="full-decode-only")
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.config", config)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    yield made
    os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # set by the engine, not by monkeypatch


@pytest.mark.parametrize("mode", ["on", "graphs", "off"])
def test_start_modes_reach_vllm(fake_vllm, tiny_model_dir, mode):
    from clinical_distil.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1, start_mode=mode)
    options = fake_vllm[-1].options
    assert options["enforce_eager"] is (mode == "off") and engine.start_mode == mode
    compilation = options.get("compilation_config")
    assert (compilation.fields if compilation else None) == (
        {"mode": "none", "cudagraph_mode": "full-decode-only"} if mode == "graphs" else None)
    assert fake_vllm[-1].in_process  # one GPU: the engine core runs in this process


def test_tensor_parallel_engine_keeps_its_engine_core_process(fake_vllm, tiny_model_dir):
    from clinical_distil.vllm_engine import VLLMEngine

    VLLMEngine(str(tiny_model_dir), tensor_parallel_size=2)
    assert not fake_vllm[-1].in_process
    with pytest.raises(ValueError, match="start_mode must be on, graphs or off"):
        VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1, start_mode="eager")


def test_adapter_engine_sizes_lora_to_the_adapter_and_its_base_view_drops_it(fake_vllm, tiny_model_dir, tmp_path):
    from clinical_distil.vllm_engine import VLLMEngine

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 16}))
    engine = VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1, adapter=str(tmp_path))
    options = fake_vllm[-1].options
    assert (options["enable_lora"], options["max_lora_rank"], options["max_loras"]) == (True, 16, 1)
    base = engine.base_only()
    assert base.adapter is None and base.llm is engine.llm and engine.adapter == str(tmp_path)


def test_an_engine_that_shares_its_gpu_sizes_its_kv_cache_up_front(fake_vllm, tiny_model_dir, monkeypatch):
    """With MEMORY_SHARE_VARIABLE set (arms side by side on one GPU) the engine takes that share and half of it as
    its KV cache, so vLLM does not profile a free memory other processes change; alone, or given a share
    outright, it leaves the KV cache to vLLM; an explicit kv_cache_memory_bytes wins."""
    import torch

    from clinical_distil.vllm_engine import MEMORY_SHARE_VARIABLE, VLLMEngine, shared_kv_cache_bytes

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(total_memory=80 * 2**30))
    assert shared_kv_cache_bytes(0.2) == 8 * 2**30 and shared_kv_cache_bytes(0.15, 10**9) == 75_000_000
    monkeypatch.delenv(MEMORY_SHARE_VARIABLE, raising=False)
    VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1)
    assert fake_vllm[-1].options["gpu_memory_utilization"] == 0.9
    assert "kv_cache_memory_bytes" not in fake_vllm[-1].options
    monkeypatch.setenv(MEMORY_SHARE_VARIABLE, "0.20")
    VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1)
    assert fake_vllm[-1].options["gpu_memory_utilization"] == 0.2
    assert fake_vllm[-1].options["kv_cache_memory_bytes"] == 8 * 2**30
    VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1, gpu_memory_utilization=0.5)
    assert fake_vllm[-1].options["gpu_memory_utilization"] == 0.5
    assert "kv_cache_memory_bytes" not in fake_vllm[-1].options
    VLLMEngine(str(tiny_model_dir), tensor_parallel_size=1, kv_cache_memory_bytes=2**30)
    assert fake_vllm[-1].options["kv_cache_memory_bytes"] == 2**30
