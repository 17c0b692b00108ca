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


def test_task_mode_is_a_per_token_gate_chosen_by_the_label():
    """Released routing: f_gate[label] = Linear(C, 2N) gives every token clean and noise logits."""
    r = _router(top_k=3, mode="task", num_tasks=21).eval()
    assert [tuple(g[0].weight.shape) for g in r.f_gate] == [(14, 16)] * 21  # Linear(C, 2N), no bias
    assert all(g[0].bias is None for g in r.f_gate)
    assert "f_gate.20.0.weight" in r.state_dict()  # the released key layout
    x = torch.randn(2, 8, 16)
    labels = torch.tensor([3, 5])
    out = r(x, labels)
    assert out.gates.shape == (2, 8, 7)  # one decision per token
    for b, t in enumerate(labels.tolist()):  # clean logits = x @ W[t][:N].T, then softmax -> top-3 renormalised
        probs = (x[b] @ r.f_gate[t][0].weight[:7].T).softmax(-1)
        values, idx = probs.topk(3, dim=-1)
        expected = torch.zeros_like(probs).scatter(-1, idx, values / values.sum(-1, keepdim=True))
        assert torch.allclose(out.gates[b], expected, atol=1e-6)
    assert not torch.allclose(out.gates[0, 0], out.gates[0, 1])  # tokens of one image route differently
    same_x = r(x[:1].expand(2, -1, -1), torch.tensor([3, 4])).gates
    assert not torch.allclose(same_x[0], same_x[1])  # the label picks the gate
    with pytest.raises(ValueError, match="task_labels"):
        r(x)
    with pytest.raises(ValueError, match="0..20"):
        r(x, torch.tensor([0, 21]))


def test_task_gate_noise_half_sets_the_noise_scale_in_training():
    r = _router(top_k=7, mode="task", num_tasks=2, renormalize=False).train()
    with torch.no_grad():
        for gate in r.f_gate:
            gate[0].weight.zero_()  # clean logits 0 for both tasks
        r.f_gate[0][0].weight[7:] = -50.0  # task 0: softplus(-800) ~ 0, no noise
        r.f_gate[1][0].weight[7:] = 5.0  # task 1: softplus(80) = 80, loud noise
    x = torch.ones(2, 64, 16)
    torch.manual_seed(0)
    quiet, loud = r(x, torch.tensor([0, 0])).gates, r(x, torch.tensor([1, 1])).gates
    assert torch.allclose(quiet, torch.full_like(quiet, 1 / 7))  # zero logits, no noise: uniform
    assert loud.std() > 0.1  # the same zero logits, scattered by the noise half of the gate


def test_released_switches_gate_init_zeros_and_noise_epsilon():
    for mode in ("blind", "task"):
        torch.manual_seed(0)
        r = NoisyTopKRouter(in_dim=16, num_experts=7, top_k=3, mode=mode, gate_init="zeros", noise_epsilon=0.01,
                            renormalize=False, noisy_gating_in_eval=True).eval()
        assert all(p.abs().sum() == 0 for p in r.parameters())  # released: zero-initialised gates
        x = torch.randn(2, 50, 16)
        labels = torch.tensor([0, 1])
        torch.manual_seed(1)
        a = r(x, labels)
        torch.manual_seed(2)
        b = r(x, labels)
        assert not torch.equal(a.gates, b.gates)  # noisy at inference: std softplus(0) + 0.01
        assert (a.gates.sum(-1) < 1).all()  # kept softmax values, not renormalised
    r0 = NoisyTopKRouter(in_dim=16, num_experts=7, top_k=7, gate_init="zeros", noise_epsilon=0.0).eval()
    assert torch.allclose(r0(torch.randn(1, 4, 16)).gates, torch.full((1, 4, 7), 1 / 7))  # zero logits: uniform
    with pytest.raises(ValueError, match="gate_init"):
        NoisyTopKRouter(in_dim=8, gate_init="ones")


def test_noise_epsilon_is_added_to_the_noise_scale():
    """With zero noise weights the only noise left is noise_epsilon * eps."""
    x = torch.randn(1, 200, 16)
    stds = []
    for eps in (0.0, 0.5):
        r = NoisyTopKRouter(in_dim=16, num_experts=7, top_k=7, noise_epsilon=eps, renormalize=False).train()
        with torch.no_grad():
            r.w_gate.weight.zero_()
            r.w_noise.weight.fill_(-50.0)  # softplus -> ~0: the raw noise scale is off
        x_pos = x.abs()
        torch.manual_seed(0)
        stds.append(float(r(x_pos).gates.detach().std()))
    assert stds[0] < 1e-6 and stds[1] > 1e-2


def test_balance_loss_default_zero_and_detects_imbalance():
    x = torch.randn(4, 32, 16, generator=torch.Generator().manual_seed(0))  # own RNG: independent of other tests
    r0 = _router(top_k=2).train()
    assert r0(x).balance_loss.item() == 0.0
    r = _router(top_k=2, balance_loss_weight=1.0).train()
    torch.manual_seed(1)
    balanced = r(x).balance_loss
    assert balanced.requires_grad
    balanced.backward()
    assert r.w_gate.weight.grad is not None and r.w_gate.weight.grad.abs().sum() > 0
    assert r.w_noise.weight.grad is not None  # the load term flows through the noise scale
    shifted = x + 1.0  # tokens sharing one direction ...
    with torch.no_grad():  # ... which the gate sends to experts 0 and 1
        r.w_gate.weight.zero_()
        r.w_gate.weight[:2] = shifted.reshape(-1, 16).mean(0) * 50
    torch.manual_seed(1)
    assert r(shifted).balance_loss.item() > 5 * balanced.item()


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
