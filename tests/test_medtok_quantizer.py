"""Region quantizer and token-packing losses against hand computations."""

import math

import pytest
import torch

from medtok.model.config import MedTokConfig
from medtok.model.losses import alignment, distance_kl, info_nce, orthogonality, shared_loss, specific_loss
from medtok.model.quantizer import RegionQuantizer, smallest_k


def make_vq(l2_norm=False, k=2, temperature=1.0, alpha=0.25):
    torch.manual_seed(0)
    return RegionQuantizer(12, 4, {"text": (0, 4), "graph": (4, 8), "shared": (8, 12)}, top_k=k,
                           temperature=temperature, alpha=alpha, l2_norm=l2_norm)


def test_round_trip_indices_to_vectors():
    vq = make_vq(l2_norm=True, k=3)
    x = torch.randn(7, 4)
    for region in ("text", "graph", "shared"):
        quantized, indices, loss = vq(x, region)
        out = vq(x, region)
        rebuilt = vq.get_output_from_indices(indices, out.weights)
        assert torch.allclose(rebuilt, quantized, atol=1e-6)
        assert indices.shape == (7, 3) and torch.allclose(out.weights.sum(-1), torch.ones(7))
        assert set(out.breakdown) == {"codebook", "commitment"}


def test_region_routing_and_nearest_entries():
    vq = make_vq(k=2)
    with torch.no_grad():
        vq.codebook.copy_(torch.arange(12).float()[:, None] * torch.tensor([1.0, 0, 0, 0]))
    x = torch.tensor([[5.2, 0, 0, 0]])
    # the globally nearest entries are 5 and 6, but each region only offers its own rows
    assert vq(x, "text").indices.tolist() == [[3, 2]]
    assert vq(x, "graph").indices.tolist() == [[5, 6]]
    assert vq(x, "shared").indices.tolist() == [[8, 9]]


def test_soft_weights_and_loss_by_hand():
    vq = make_vq(k=2, temperature=0.5, alpha=0.25)
    with torch.no_grad():
        vq.codebook.zero_()
        vq.codebook[0, 0] = 1.0   # entry 0 = (1,0,0,0)
        vq.codebook[1, 0] = -1.0  # entry 1 = (-1,0,0,0)
        vq.codebook[2, 0] = 10.0
        vq.codebook[3, 0] = 20.0
    x = torch.tensor([[0.5, 0.0, 0.0, 0.0]])
    out = vq(x, "text")
    # distances 0.25 and 2.25; weights softmax(-d / 0.5) = softmax([-0.5, -4.5])
    w0 = 1 / (1 + math.exp(-4.0))
    assert out.indices.tolist() == [[0, 1]]
    assert torch.allclose(out.weights, torch.tensor([[w0, 1 - w0]]), atol=1e-6)
    q0 = w0 * 1.0 + (1 - w0) * -1.0
    mse = (q0 - 0.5) ** 2 / 4  # mean over the 4 dims, only dim 0 differs
    assert out.breakdown["codebook"].item() == pytest.approx(mse, rel=1e-5)
    assert out.loss.item() == pytest.approx(mse * 1.25, rel=1e-5)
    assert out.quantized[0, 0].item() == pytest.approx(q0, rel=1e-5)


def test_straight_through_gradient_flow():
    vq = make_vq(k=2)
    x = torch.randn(5, 4, requires_grad=True)
    quantized, _, loss = vq(x, "graph")
    (quantized * torch.arange(4.0)).sum().backward(retain_graph=True)
    # identity gradient through the quantization step
    assert torch.allclose(x.grad, torch.arange(4.0).expand(5, 4))
    assert vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0
    loss.backward()
    g = vq.codebook.grad
    assert g[4:8].abs().sum() > 0 and g[:4].abs().sum() == 0 and g[8:].abs().sum() == 0


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t = 0.5
    c = 1 / math.sqrt(2)
    # row 0: logits [1, c]/t, target 0; row 1: logits [0, c]/t, target 1
    l0 = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(c / t)))
    l1 = -math.log(math.exp(c / t) / (math.exp(0) + math.exp(c / t)))
    assert info_nce(q, k, t).item() == pytest.approx((l0 + l1) / 2, rel=1e-5)


def test_alignment_orthogonality_kl_by_hand():
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert alignment(a, b).item() == pytest.approx((1 / math.sqrt(2) + 1) / 2, rel=1e-6)
    # Z_s^T Z_c with normalised rows: e1 e1^T/sqrt2 ... computed explicitly
    zs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    zc = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert orthogonality(zs, zc).item() == pytest.approx(math.sqrt(2) / 2, rel=1e-6)
    assert orthogonality(zs, torch.zeros(2, 2) + torch.tensor([[0.0, 0.0], [0.0, 0.0]])).item() == 0.0
    da = torch.tensor([[0.0, math.log(3.0)]])  # p = softmax([0, -ln3]) = [3/4, 1/4]
    db = torch.tensor([[0.0, 0.0]])            # q = [1/2, 1/2]
    p, r = [0.75, 0.25], [0.5, 0.5]
    kl_pq = sum(pi * math.log(pi / qi) for pi, qi in zip(p, r))
    kl_qp = sum(qi * math.log(qi / pi) for pi, qi in zip(p, r))
    assert distance_kl(da, db).item() == pytest.approx(0.5 * (kl_pq + kl_qp), rel=1e-5)


def test_shared_loss_by_hand():
    """L_shared = NCE(t->g) + NCE(g->t) - beta * align, on 2 x 2 tensors computed by hand."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    e_t = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    e_g = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    t, beta = 0.5, 0.3
    # q_t = q_g = I: each row's logits are (1/t, 0) with the positive first -> CE = log(1 + e^{-1/t})
    nce = 2 * math.log(1 + math.exp(-1 / t))            # both directions: 0.2538560
    align = (1 / math.sqrt(2) + 1) / 2                   # cosines 1/sqrt2 and 1: 0.8535534
    sh = shared_loss(q, q, e_t, e_g, beta=beta, temperature=t)
    assert sh["shared_nce"].item() == pytest.approx(nce, rel=1e-6)
    assert sh["shared_align"].item() == pytest.approx(align, rel=1e-6)
    # one -beta, not the paper's -2 beta (documented deviation): 0.2538560 - 0.3 * 0.8535534
    assert sh["shared"].item() == pytest.approx(-0.0022100, abs=1e-6)


def test_specific_loss_by_hand():
    """L_specific = NCE(q_t^s -> q_t^s') + NCE(q_g^s -> q_g^s') + lambda (orth_t + orth_g), by hand."""
    eye = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    aug = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    t, lam = 0.5, 0.2
    c = 1 / math.sqrt(2)
    # text: rows (1,0)->(1,0) vs (1,1)/sqrt2 and (0,1)->(1,1)/sqrt2 vs (1,0)
    nce_t = (-math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(c / t)))
             - math.log(math.exp(c / t) / (1 + math.exp(c / t)))) / 2
    nce_g = math.log(1 + math.exp(-1 / t))                 # identical views, as in the shared test
    orth = math.sqrt(2) / 2                                # ||I^T P||_F / 2 = ||I^T I||_F / 2
    sp = specific_loss(eye, aug, eye, eye, swap, eye, lam=lam, temperature=t)
    assert sp["specific_nce"].item() == pytest.approx(nce_t + nce_g, rel=1e-6)
    assert sp["specific_orth"].item() == pytest.approx(2 * orth, rel=1e-6)
    assert sp["specific"].item() == pytest.approx(nce_t + nce_g + lam * 2 * orth, rel=1e-6)
    assert sp["specific"].item() == pytest.approx(0.7398554, rel=1e-6)  # 0.3301 + 0.1269 + 0.2828


def test_dead_entry_restart_reseats_only_idle_entries():
    vq = make_vq(k=1)
    before = vq.codebook.detach().clone()
    vq.mark_used(torch.tensor([[0], [5]]))
    vq.idle_steps[1:4] = 50
    n = vq.restart_dead("text", torch.randn(10, 4), max_idle=30, generator=torch.Generator().manual_seed(0))
    assert n == 3
    assert torch.equal(vq.codebook[0], before[0]) and not torch.equal(vq.codebook[1], before[1])
    assert torch.equal(vq.codebook[4:], before[4:])


def test_config_validation_and_regions():
    c = MedTokConfig(codebook_size=12000)
    assert c.regions() == {"text": (0, 4000), "graph": (4000, 8000), "shared": (8000, 12000)}
    with pytest.raises(ValueError):
        MedTokConfig(graph_encoder="transformer")
    with pytest.raises(ValueError):
        MedTokConfig(codebook_size=6, top_k=4)
    with pytest.raises(ValueError):
        MedTokConfig(region_fractions=(0.5, 0.5, 0.5))


def test_nearest_without_distance_matrix_matches_full_topk():
    torch.manual_seed(3)
    vq = RegionQuantizer(3000, 16, {"text": (0, 1000), "graph": (1000, 2000), "shared": (2000, 3000)}, top_k=4,
                         l2_norm=False)
    x = torch.randn(2000, 16)
    exact = vq(x, "graph")
    nodist = vq(x, "graph", with_distances=False)
    assert torch.equal(nodist.indices, exact.indices) and nodist.distances is None
    assert torch.allclose(exact.quantized, nodist.quantized, atol=1e-5)
    assert torch.allclose(exact.weights, nodist.weights, atol=1e-4)


def test_smallest_k_is_exactly_topk():
    g = torch.Generator().manual_seed(0)
    for n, k in [(4000, 4), (1000, 8), (64, 4), (96, 3)]:
        s = torch.randn(257, n, generator=g)
        v, i = smallest_k(s, k)
        rv, ri = s.topk(k, dim=-1, largest=False)
        assert torch.equal(v, rv) and torch.equal(i, ri)
    # the k smallest all in one column group must still be found
    s = torch.ones(2, 800)
    s[:, [3, 103, 203, 303]] = torch.tensor([-4.0, -3.0, -2.0, -1.0])
    v, i = smallest_k(s, 4)
    assert i.tolist() == [[3, 103, 203, 303]] * 2
