"""The chunked linear cross-entropy against the plain logits path."""

from __future__ import annotations

import pytest
import torch

from fastrec import losses
from fastrec.losses import linear_cross_entropy
from fastrec.model import sequence_loss


def reference(features, weight, targets, row_weights=None):
    return sequence_loss(features @ weight.T, targets, row_weights)


@pytest.mark.parametrize("shape", [(7,), (3, 5), (1,), (4, 1)])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_plain_cross_entropy(shape, weighted, monkeypatch):
    # A tiny chunk budget forces several chunks, including a short last one.
    monkeypatch.setattr(losses, "CPU_CHUNK_ELEMENTS", 40)
    torch.manual_seed(0)
    V, D = 13, 6
    features = torch.randn(*shape, D, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, D, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, shape)
    row_weights = torch.rand(shape, dtype=torch.float64) if weighted else None

    expected = reference(features, weight, targets, row_weights)
    grads = torch.autograd.grad(expected, (features, weight))
    f32 = features.detach().float().requires_grad_()
    w32 = weight.detach().float().requires_grad_()
    actual = linear_cross_entropy(f32, w32, targets, row_weights)
    actual.backward()
    # sequence_loss upcasts the logits to fp32, so both sides are fp32 at heart.
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f32.grad, grads[0].float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w32.grad, grads[1].float(), rtol=1e-4, atol=1e-6)


def test_all_padding_gives_zero_loss_and_grads():
    features = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(5, 3, requires_grad=True)
    loss = linear_cross_entropy(features, weight, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(features.grad) == 0
    assert torch.count_nonzero(weight.grad) == 0


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(1)
    features = torch.randn(64, 16)
    weight = torch.randn(50, 16)
    targets = torch.randint(1, 50, (64,))
    expected = linear_cross_entropy(features, weight, targets)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = linear_cross_entropy(features, weight, targets)
    assert actual.dtype == torch.float32
    # bf16 products carry about 3 significant digits.
    torch.testing.assert_close(actual, expected, rtol=2e-2, atol=2e-2)


def test_grad_output_scales_gradients():
    features = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(6, 4, requires_grad=True)
    targets = torch.randint(1, 6, (5,))
    (3.0 * linear_cross_entropy(features, weight, targets)).backward()
    f, w = features.grad.clone(), weight.grad.clone()
    features.grad = weight.grad = None
    linear_cross_entropy(features, weight, targets).backward()
    torch.testing.assert_close(f, 3.0 * features.grad)
    torch.testing.assert_close(w, 3.0 * weight.grad)


def test_left_padded_rows_match_plain_cross_entropy():
    # Rows whose target is padding are dropped before the output layer on the CPU;
    # the loss and both gradients must not change, including the zero gradient of
    # the dropped rows.
    torch.manual_seed(1)
    V, D = 11, 4
    features = torch.randn(3, 8, D, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, D, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, V, (3, 8))
    targets[0, :5] = 0
    targets[2, :7] = 0
    expected = reference(features, weight, targets)
    grads = torch.autograd.grad(expected, (features, weight))
    f32 = features.detach().float().requires_grad_()
    w32 = weight.detach().float().requires_grad_()
    actual = linear_cross_entropy(f32, w32, targets)
    actual.backward()
    torch.testing.assert_close(actual, expected.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f32.grad, grads[0].float(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w32.grad, grads[1].float(), rtol=1e-4, atol=1e-6)
    assert torch.count_nonzero(f32.grad[0, :5]) == 0
