"""GPU tests (skipped without CUDA): PyTorch's varlen kernel against SDPA, both presets' losses on a GPU, and
compiled layers checkpointed inside their graph against their own loss.

    python -m pytest tests/test_attention_gpu.py
"""

import json

import pytest
import torch
from conftest import run_script, sdpa_per_sequence

from clinical_distil import attention

pytestmark = pytest.mark.skipif(not attention.available(torch.cuda.is_available()),
                                reason="needs a CUDA GPU (Ampere or newer) and PyTorch's varlen kernel")


@pytest.mark.parametrize("heads, kv_heads, lengths", [(8, 8, [5, 130, 1]), (32, 8, [700, 64, 1201]), (9, 3, [17])])
def test_kernel_matches_sdpa_per_sequence_with_gradients(heads, kv_heads, lengths):
    torch.manual_seed(0)
    total, dim = sum(lengths), 64
    query = torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    key = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    value = torch.randn(total, kv_heads, dim, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    cu_seq = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    out = attention.torch_varlen_kernel(query, key, value, cu_seq, max(lengths), dim ** -0.5, True)
    reference = sdpa_per_sequence(query.float(), key.float(), value.float(), cu_seq, max(lengths), dim ** -0.5, True)
    torch.testing.assert_close(out.float(), reference, rtol=2e-2, atol=2e-2)
    grads = torch.autograd.grad(out.float().square().sum(), (query, key, value))
    reference_grads = torch.autograd.grad(reference.square().sum(), (query, key, value))
    for got, expected in zip(grads, reference_grads):
        assert (got.float() - expected.float()).norm() / expected.float().norm() < 2e-2


def test_presets_reach_the_same_losses_on_a_gpu(tiny_model_dir, tmp_path):
    """bench/finetune_speed.py on the tiny model on CUDA: the paper preset and the fast one (padding-free batches
    under torch_varlen or flash-attn, Liger where installed) start from the same eval loss and end within bf16
    rounding of each other, on a 4-bit and a bf16 base."""
    output = tmp_path / "speed.json"
    finished = run_script("bench/finetune_speed.py", "--model", str(tiny_model_dir), "--train_examples", "8",
                          "--test_examples", "4", "--configs", "paper,fast_4bit,fast_bf16",
                          "--work_dir", str(tmp_path / "w"), "--extra=--learning_rate 0.01", "--output", str(output),
                          "--longest_example", "900")
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = {row["config"]: row for row in json.loads(output.read_text())["rows"]}
    assert rows["fast_4bit"]["attention"] in (attention.NAME, "flash_attention_2")
    assert rows["paper"]["steps"] == rows["fast_4bit"]["steps"] == rows["fast_bf16"]["steps"] == 4
    for name in ("fast_4bit", "fast_bf16"):
        assert rows[name]["eval_loss_before"] == pytest.approx(rows["paper"]["eval_loss_before"], rel=1e-2)
        assert rows[name]["eval_loss"] == pytest.approx(rows["paper"]["eval_loss"], rel=2e-2)
    assert rows["paper"]["eval_loss"] < rows["paper"]["eval_loss_before"]


@pytest.mark.parametrize("four_bit", [False, True])
def test_compiled_checkpointed_layers_take_the_gradient_of_their_own_loss_on_a_gpu(tiny_model_dir, four_bit):
    """Compiled layers checkpointed inside their graph on CUDA (PyTorch's dropout, replayed from the saved random
    state), on a float and on the paper's 4-bit base: the gradient agrees with the loss's central difference
    under the same masks."""
    from conftest import lora_directional_derivative

    derivative, difference = lora_directional_derivative(tiny_model_dir, "cuda", True, four_bit=four_bit)
    assert abs(derivative - difference) <= 0.01 + 0.03 * abs(difference), (derivative, difference)
