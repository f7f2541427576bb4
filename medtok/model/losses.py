"""Token packing losses (paper Section 3.2), each a small pure function so it can be
checked against a hand computation.

    L = L_C + L_KL + L_token,   L_token = L_shared + L_specific
    L_KL       = 1/2 [KL(p_t || p_g) + KL(p_g || p_t)], p = softmax(-dist / T) of the two
                 cross-modal embeddings over the shared region
    L_shared   = NCE(q_t^c -> q_g^c) + NCE(q_g^c -> q_t^c) - beta * align(e_t^c, e_g^c)
    L_specific = NCE(q_t^s -> q_t^s') + NCE(q_g^s -> q_g^s')
                 + lambda * [orth(q_t^s, q_t^c) + orth(q_g^s, q_g^c)]
with q' the quantized vectors of an augmented view, align the mean cosine of matched
pairs, and orth = ||Z_s^T Z_c||_F / B on row-normalised Z (0 when the specific and shared
spaces are orthogonal).

Deviations from the paper's Section 3 that live here (behaviour unchanged, kept on purpose):
* L_shared: the paper (and the official code, which adds NCE(t->g) - beta*align and
  NCE(g->t) - beta*align) has -2*beta*align; here it is -beta*align, i.e. our beta = 0.1 is the
  paper's beta = 0.05. The alignment term is a cosine of unit vectors, bounded in [-1, 1].
* L_specific (Eq. 8): the paper's term contrasts the specific token together with the other
  modality's shared token, NCE([q_t^s; ê_g^c] -> [q_t^s'; ê_g^c]) (the official code
  concatenates them); here ê_g^c is left out, NCE(q_t^s -> q_t^s'): it is identical in both
  views, so with it the contrast can be solved from the shared part instead of the specific token.
* orth: row-normalised and divided by B, so its scale does not grow with batch size or
  vector norm (the official code takes the raw Frobenius norm of Z_s^T Z_c).
* align: cosine of the cross-modal embeddings e_t^c, e_g^c (the official code aligns the two
  modality features before cross-attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of q should pick row i of k (cosine / temperature)."""
    logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


def alignment(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of matched rows."""
    return (F.normalize(x1, dim=-1) * F.normalize(x2, dim=-1)).sum(-1).mean()


def orthogonality(z_specific: torch.Tensor, z_shared: torch.Tensor) -> torch.Tensor:
    """||Z_s^T Z_c||_F / B over row-normalised Z."""
    zs, zc = F.normalize(z_specific, dim=-1), F.normalize(z_shared, dim=-1)
    return torch.linalg.matrix_norm(zs.T @ zc) / len(zs)


def distance_kl(dist_a: torch.Tensor, dist_b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Symmetric KL between softmax(-dist / T) distributions of two embeddings over the same region."""
    la = F.log_softmax(-dist_a / temperature, dim=-1)
    lb = F.log_softmax(-dist_b / temperature, dim=-1)
    kl_ab = (la.exp() * (la - lb)).sum(-1).mean()
    kl_ba = (lb.exp() * (lb - la)).sum(-1).mean()
    return 0.5 * (kl_ab + kl_ba)


def shared_loss(q_t, q_g, e_t, e_g, beta: float, temperature: float = 0.07,
                nce_weight: float = 1.0) -> dict[str, torch.Tensor]:
    nce = info_nce(q_t, q_g, temperature) + info_nce(q_g, q_t, temperature)
    if nce_weight != 1.0:  # weight 1 leaves today's graph untouched (bit for bit)
        nce = nce_weight * nce
    align = alignment(e_t, e_g)
    # paper: -2 * beta * align (one -beta per direction); one -beta here (module docstring)
    return {"shared_nce": nce, "shared_align": align, "shared": nce - beta * align}


def specific_loss(q_ts, q_ts_aug, q_gs, q_gs_aug, q_tc, q_gc, lam: float,
                  temperature: float = 0.07, nce_weight: float = 1.0) -> dict[str, torch.Tensor]:
    # Eq. 8 contrasts [q^s; e^c of the other modality] across views; the shared part, the same in
    # both views, is left out here (module docstring)
    nce = info_nce(q_ts, q_ts_aug, temperature) + info_nce(q_gs, q_gs_aug, temperature)
    if nce_weight != 1.0:
        nce = nce_weight * nce
    orth = orthogonality(q_ts, q_tc) + orthogonality(q_gs, q_gc)
    return {"specific_nce": nce, "specific_orth": orth, "specific": nce + lam * orth}
