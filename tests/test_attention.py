"""The torch_varlen attention implementation: sequence bounds, and a model's logits against SDPA.

The CUDA kernel is swapped for a reference (SDPA per sequence) on CPU, so these tests check what the
implementation adds around the kernel; tests/test_attention_gpu.py checks the kernel itself on a GPU."""

import pytest
import torch
from conftest import sdpa_per_sequence
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from clinical_distil import attention


@pytest.fixture
def varlen_model(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(attention, "varlen_kernel", sdpa_per_sequence)
    attention.register()
    varlen = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32,
                                                  attn_implementation=attention.NAME)
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    return varlen.eval(), sdpa.eval()


def test_bounds_from_the_collator_and_from_positions():
    cu_seq = torch.tensor([0, 3, 7, 9], dtype=torch.int32)
    bounds, longest, kept = attention.sequence_bounds(1, 9, None, torch.device("cpu"), cu_seq_lens_q=cu_seq,
                                                      max_length_q=4)
    assert bounds.tolist() == [0, 3, 7, 9] and longest == 4 and kept is None
    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0, 1]])
    bounds, longest, kept = attention.sequence_bounds(1, 9, None, torch.device("cpu"), position_ids=positions)
    assert bounds.tolist() == [0, 3, 7, 9] and longest == 4 and kept is None
    # two rows of plain positions: one sequence per row
    rows = torch.arange(5).repeat(2, 1)
    bounds, longest, _ = attention.sequence_bounds(2, 5, None, torch.device("cpu"), position_ids=rows)
    assert bounds.tolist() == [0, 5, 10] and longest == 5
    bounds, longest, _ = attention.sequence_bounds(3, 4, None, torch.device("cpu"))
    assert bounds.tolist() == [0, 4, 8, 12] and longest == 4


def test_bounds_from_a_padding_mask_keep_the_real_tokens():
    mask = torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    bounds, longest, kept = attention.sequence_bounds(3, 4, mask, torch.device("cpu"))
    assert bounds.tolist() == [0, 3, 6, 10] and longest == 4
    assert kept.tolist() == [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]


def test_a_padding_free_row_gives_each_example_its_own_logits(varlen_model):
    varlen, sdpa = varlen_model
    first, second = torch.randint(5, 1000, (1, 7)), torch.randint(5, 1000, (1, 12))
    row = torch.cat([first, second], dim=1)
    positions = torch.cat([torch.arange(7), torch.arange(12)]).unsqueeze(0)
    cu_seq = torch.tensor([0, 7, 19], dtype=torch.int32)
    with torch.no_grad():
        packed = varlen(input_ids=row, position_ids=positions, cu_seq_lens_q=cu_seq, cu_seq_lens_k=cu_seq,
                        max_length_q=12, max_length_k=12).logits
        alone = torch.cat([sdpa(input_ids=first).logits, sdpa(input_ids=second).logits], dim=1)
        # without the collator's bounds the positions give them
        from_positions = varlen(input_ids=row, position_ids=positions).logits
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_positions, alone, rtol=1e-5, atol=1e-5)


def test_a_padded_batch_matches_sdpa_on_its_real_tokens(varlen_model):
    varlen, sdpa = varlen_model
    ids = torch.randint(5, 1000, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        by_varlen = varlen(input_ids=ids, attention_mask=mask).logits
        by_sdpa = sdpa(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(by_varlen[0], by_sdpa[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(by_varlen[1, :6], by_sdpa[1, :6], rtol=1e-5, atol=1e-5)


def test_generation_with_a_cache_is_refused(varlen_model):
    varlen, _ = varlen_model
    with pytest.raises(ValueError, match="without a KV cache"):
        varlen.generate(torch.randint(5, 1000, (1, 4)), max_new_tokens=2, do_sample=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=6))
def test_bounds_from_positions_follow_any_packing(lengths):
    """Positions restarting at each example give the examples' cumulative bounds and the longest one."""
    positions = torch.cat([torch.arange(length) for length in lengths]).unsqueeze(0)
    bounds, longest, kept = attention.sequence_bounds(1, sum(lengths), None, torch.device("cpu"),
                                                      position_ids=positions)
    assert bounds.tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
    assert longest == max(lengths) and kept is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=4),
                          st.booleans()), min_size=1, max_size=5))
def test_bounds_from_any_padding_mask_keep_each_rows_tokens(rows):
    """Rows of (tokens, padding, padded on the left): the kept positions are each row's real tokens in order, and
    the bounds count them row by row."""
    width = max(tokens + padding for tokens, padding, _ in rows)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    expected = []
    for index, (tokens, _, left) in enumerate(rows):
        columns = range(width - tokens, width) if left else range(tokens)
        mask[index, list(columns)] = 1
        expected += [index * width + column for column in columns]
    bounds, longest, kept = attention.sequence_bounds(len(rows), width, mask, torch.device("cpu"))
    assert kept.tolist() == expected
    assert bounds.tolist() == [0, *torch.tensor([tokens for tokens, _, _ in rows]).cumsum(0).tolist()]
    assert longest == max(tokens for tokens, _, _ in rows)


COMPILED_LAYERS_SCRIPT = r'''
import json, sys
import torch
import torch.nn.attention.varlen as varlen
from peft import LoraConfig, get_peft_model
from torch._dynamo.utils import counters
from transformers import AutoModelForCausalLM
from clinical_distil import attention, speedups

# stand-ins for the CUDA kernels of torch's varlen custom ops, of the right shapes, so that the code around them
# (attention.py, transformers' layer, PEFT's LoRA) is traced on CPU
@varlen._varlen_attn.register_kernel("cpu")
def forward(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, is_causal=False, scale=None, window_size=None,
            *cache):
    return query * 1.0, torch.zeros(query.shape[1], query.shape[0]), torch.zeros(2, dtype=torch.uint64)

@varlen._varlen_attn_backward.register_kernel("cpu")
def backward(grad_out, query, key, value, out, lse, cu_seq_q, cu_seq_k, max_q, max_k, is_causal, rng_state,
             scale=None, window_size=None):
    return grad_out * 1.0, torch.zeros_like(key), torch.zeros_like(value)

attention.register()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16, attn_implementation=attention.NAME)
model.config.use_cache = False
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                         task_type="CAUSAL_LM")).train()
layers = speedups.compile_decoder_layers(model, backend="eager")
graphs = []
for lengths in ((7, 9), (30, 4), (12, 17), (50, 3)):  # padding-free steps of two examples, as TRL's collator gives
    positions = torch.cat([torch.arange(length) for length in lengths]).unsqueeze(0)
    cu_seq = torch.tensor([0, lengths[0], sum(lengths)], dtype=torch.int32)
    ids = torch.randint(3, 200, positions.shape)
    loss = model(input_ids=ids, position_ids=positions, cu_seq_lens_q=cu_seq, cu_seq_lens_k=cu_seq,
                 max_length_q=max(lengths), max_length_k=max(lengths), labels=ids).loss
    loss.backward()
    graphs.append(counters["stats"]["unique_graphs"])
print(json.dumps({"layers": layers, "graphs": graphs, "breaks": dict(counters["graph_break"])}))
'''


def test_compiled_layers_trace_whole_under_varlen_attention(tiny_model_dir):
    """Each decoder layer under torch_varlen and LoRA compiles with no graph break: a break splits every layer's
    forward and backward into pieces, each with its own launch and guard checks, and left the GPU idle more of
    each step (bench/RESULTS.md). The first layer (whose input needs no gradient) and the others take a graph
    each, which PyTorch may first specialise to the first length; from the second step on, new lengths
    compile nothing."""
    import json
    import subprocess
    import sys

    from conftest import REPO

    finished = subprocess.run([sys.executable, "-c", COMPILED_LAYERS_SCRIPT, str(tiny_model_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    traced = json.loads(finished.stdout.strip().splitlines()[-1])
    assert traced["layers"] == 2 and traced["breaks"] == {}
    assert traced["graphs"][0] == 2 and traced["graphs"][1] <= 4  # two layer variants, then at most once more
    assert traced["graphs"][3] == traced["graphs"][2] == traced["graphs"][1]
