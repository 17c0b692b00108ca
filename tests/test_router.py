"""Noisy top-K router, Eq. 3 (moediffir/models/router.py)."""

from __future__ import annotations

import pytest
import torch

from moediffir.models.router import NoisyTopKRouter


def _router(**kw) -> NoisyTopKRouter:
    torch.manual_seed(0)
    r = NoisyTopKRouter(in_dim=16, num_experts=7, **kw)
    if r.config.mode == "blind":
        torch.nn.init.normal_(r.w_gate.weight)  # confident logits, so top-K choices are clear-cut
    return r


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("training", [True, False])
def test_exactly_k_experts_per_token(k, training):
    r = _router(top_k=k).train(training)
    out = r(torch.randn(2, 50, 16))
    assert out.gates.shape == (2, 50, 7) and out.indices.shape == (2, 50, k)
    assert ((out.gates > 0).sum(-1) == k).all()
    assert torch.allclose(out.gates.sum(-1), torch.ones(2, 50), atol=1e-5)  # renormalised (default)
    # the recorded indices are exactly the non-zero gates, with their values
    assert torch.allclose(out.gates.gather(-1, out.indices), out.values)


def test_no_noise_in_eval_but_noise_in_training():
    r = _router(top_k=3)
    x = torch.randn(2, 40, 16)
    r.eval()
    a, b = r(x), r(x)
    assert torch.equal(a.gates, b.gates)
    expected = (x @ r.w_gate.weight.T).softmax(-1)  # deterministic logits x W_g
    assert torch.equal(a.indices, expected.topk(3, -1).indices)
    r.train()
    c, d = r(x), r(x)
    assert not torch.equal(c.gates, d.gates)  # eps * Softplus(x W_noise) with W_noise = 0 still has std 0.69


def test_noisy_gating_in_eval_switch():
    r = _router(top_k=3, noisy_gating_in_eval=True).eval()
    x = torch.randn(2, 40, 16)
    assert not torch.equal(r(x).gates, r(x).gates)


def test_k_equal_n_is_soft_weighting():
    for renorm in (True, False):
        r = _router(top_k=7, renormalize=renorm).eval()
        x = torch.randn(3, 11, 16)
        assert torch.allclose(r(x).gates, (x @ r.w_gate.weight.T).softmax(-1), atol=1e-6)


def test_renormalisation_choice():
    x = torch.randn(2, 9, 16)
    lit = _router(top_k=2, renormalize=False).eval()
    probs = (x @ lit.w_gate.weight.T).softmax(-1)
    top = probs.topk(2, -1)
    assert torch.allclose(lit(x).values, top.values, atol=1e-6)  # literal Eq. 3
    ren = _router(top_k=2, renormalize=True).eval()
    assert torch.allclose(ren(x).values, top.values / top.values.sum(-1, keepdim=True), atol=1e-6)
    # renormalised gates = softmax over the kept logits (Shazeer's KeepTopK-then-softmax)
    logits = x @ ren.w_gate.weight.T
    assert torch.allclose(ren(x).values, logits.gather(-1, top.indices).softmax(-1), atol=1e-6)


def test_blind_ignores_task_labels():
    r = _router(top_k=3).eval()
    x = torch.randn(2, 8, 16)
    a = r(x, task_labels=torch.tensor([0, 1]))
    b = r(x, task_labels=torch.tensor([5, 20]))
    assert torch.equal(a.gates, b.gates)


def test_task_mode_uses_labels_only():
    r = _router(top_k=3, mode="task", num_tasks=21).eval()
    x1, x2 = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    labels = torch.tensor([3, 3])
    a, b = r(x1, labels), r(x2, labels)
    assert a.gates.shape == (2, 1, 7)  # one decision per image
    assert torch.equal(a.gates, b.gates)  # tokens do not matter
    assert torch.equal(a.gates[0], a.gates[1])  # same label, same gates
    gates = torch.stack([r(None, torch.tensor([t])).gates[0, 0] for t in range(21)])
    assert len({tuple(g.tolist()) for g in gates}) > 1  # different labels route differently
    with pytest.raises(ValueError, match="task_labels"):
        r(x1)
    with pytest.raises(ValueError, match="0..20"):
        r(x1, torch.tensor([0, 21]))


def test_balance_loss_default_zero_and_detects_imbalance():
    x = torch.randn(4, 32, 16)
    r0 = _router(top_k=2).train()
    assert r0(x).balance_loss.item() == 0.0
    r = _router(top_k=2, balance_loss_weight=1.0).train()
    torch.manual_seed(1)
    balanced = r(x).balance_loss
    assert balanced.requires_grad
    balanced.backward()
    assert r.w_gate.weight.grad is not None and r.w_gate.weight.grad.abs().sum() > 0
    assert r.w_noise.weight.grad is not None  # the load term flows through the noise scale
    with torch.no_grad():  # push every token to experts 0 and 1
        r.w_gate.weight.zero_()
        r.w_gate.weight[:2] = x.reshape(-1, 16).mean(0) * 50
    torch.manual_seed(1)
    assert r(x).balance_loss.item() > 5 * balanced.item()


def test_bad_arguments():
    with pytest.raises(ValueError, match="top_k"):
        NoisyTopKRouter(in_dim=8, num_experts=3, top_k=4)
    with pytest.raises(ValueError, match="mode"):
        NoisyTopKRouter(in_dim=8, mode="oracle")


@pytest.mark.parametrize("mode", ["blind", "task"])
def test_save_load_round_trip(tmp_path, mode):
    r = _router(top_k=3, mode=mode, balance_loss_weight=0.5).eval()
    r.save_pretrained(tmp_path)
    r2 = NoisyTopKRouter.from_pretrained(tmp_path).eval()
    assert r2.config.top_k == 3 and r2.config.mode == mode and r2.config.balance_loss_weight == 0.5
    x, labels = torch.randn(2, 5, 16), torch.tensor([1, 7])
    assert torch.equal(r(x, labels).gates, r2(x, labels).gates)
