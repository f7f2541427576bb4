"""One codebook C (N x d) split into regions, soft top-K quantization (paper Eq. 3-5).

Each embedding e is quantized against its own region only: the K nearest entries
c_1..c_K (squared Euclidean distance; on the unit sphere when `l2_norm`) are mixed with
weights w = softmax(-dist / temperature) over those K, q = sum_k w_k c_k. The output
uses the straight-through estimator (forward value q, gradient of e), and the loss is
    L_C = ||sg[e] - q||^2 + alpha * ||e - sg[q]||^2          (Eq. 5, weighted as VQ-VAE)
Interface as vector-quantize-pytorch: `quantized, indices, loss = vq(x, region)`; the
returned tuple also carries `.weights`, `.distances` and the named `.breakdown`, and
`get_output_from_indices(indices, weights)` rebuilds the quantized vectors from tokens.
Indices are global rows of C, so a token id means the same thing in every group.

Deviations from the paper's Section 3 that live here (the full table is in the notes / README):
* Eq. 5: the weights follow VQ-VAE (van den Oord et al. 2017) and the official MedTok code --
  codebook term weight 1 with the stop-gradient on e, commitment term weight alpha with the
  stop-gradient on q -- not the weighting written in the paper's text.
* Straight-through: `e + sg[q - e]` (forward value q, identity gradient to e), the standard
  estimator; the form printed in the paper differs from it (a typo, per the review in issue 9).
* With `l2_norm` both e and the entries are unit-normalised before distances, loss and the
  straight-through step (the official code normalises for the distances only).
* Dead-entry restarts (`restart_dead`) are not in the paper: an entry unused for
  `restart_idle` steps is re-seated on a random recent embedding, which keeps usage near 100%.

Device rule: every tensor made here is created on the device of the data it meets (the
codebook's, or the input's), so the same code runs on CPU and CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smallest_k(score: torch.Tensor, k: int, block: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact `score.topk(k, largest=False)` for wide rows, ~2x faster on CPU.

    Partition the columns into groups; the k smallest entries of a row lie in the k groups
    with the smallest group minima (an entry outside them has k group minima below it,
    i.e. k smaller entries). Group g holds columns g, g + G, g + 2G, ... (G groups of
    `block` columns), so the minima are one vectorised reduction over a strided view; then
    only the k * block candidate entries are ranked.
    """
    b, n = score.shape
    if n % block or n // block < 2 * k:
        return score.topk(k, dim=-1, largest=False)
    groups = n // block
    best = score.view(b, block, groups).amin(1).topk(k, dim=-1, largest=False).indices   # [b, k]
    cols = (best.unsqueeze(-1) + groups * torch.arange(block, device=score.device)).view(b, k * block)
    vals, j = score.gather(1, cols).topk(k, dim=-1, largest=False)
    return vals, cols.gather(1, j)


class VQOutput(tuple):
    """(quantized, indices, loss) with extra attributes: weights, distances, breakdown."""

    def __new__(cls, quantized, indices, loss, weights, distances, breakdown):
        self = super().__new__(cls, (quantized, indices, loss))
        self.quantized, self.indices, self.loss = quantized, indices, loss
        self.weights, self.distances, self.breakdown = weights, distances, breakdown
        return self


class RegionQuantizer(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, regions: dict[str, tuple[int, int]], top_k: int = 4,
                 temperature: float = 1.0, alpha: float = 0.25, l2_norm: bool = True, init: str = "randn"):
        super().__init__()
        self.num_embeddings, self.dim, self.top_k = num_embeddings, dim, top_k
        self.temperature, self.alpha, self.l2_norm = temperature, alpha, l2_norm
        self.regions = dict(regions)
        ends = sorted(self.regions.values())
        if ends[0][0] != 0 or ends[-1][1] != num_embeddings or any(a[1] != b[0] for a, b in zip(ends, ends[1:])):
            raise ValueError(f"regions {regions} must tile [0, {num_embeddings})")
        rows = torch.randn(num_embeddings, dim)
        if init == "unit":  # the same draw scaled to norm 1, the norm restarted rows get (issue 21)
            rows = F.normalize(rows, dim=-1)
        elif init != "randn":
            raise ValueError(f"init must be randn or unit, got {init!r}")
        self.codebook = nn.Parameter(rows)
        # steps since each entry was last selected (drives dead-entry restarts in training)
        self.register_buffer("idle_steps", torch.zeros(num_embeddings, dtype=torch.long))

    def entries(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1) if self.l2_norm else self.codebook

    def region_entries(self, region: str) -> torch.Tensor:
        lo, hi = self.regions[region]
        return self.entries()[lo:hi]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1) if self.l2_norm else x

    def distances(self, x: torch.Tensor, region: str) -> torch.Tensor:
        """Squared distances [B, region size] of prepared inputs to the region's entries."""
        c = self.region_entries(region)
        return (x.pow(2).sum(-1, keepdim=True) + c.pow(2).sum(-1) - 2 * x @ c.T).clamp_min(0)

    def nearest(self, x: torch.Tensor, region: str,
                entries: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances [B, K], region-local indices [B, K]) of the K nearest entries, ascending,
        without materialising the full distance matrix (the tokenizer's hot loop)."""
        lo, hi = self.regions[region]
        c = (self.entries() if entries is None else entries)[lo:hi]
        # |x|^2 is constant per row: rank by |c|^2 - 2 x.c in one fused op, then add it back
        score = torch.addmm(c.pow(2).sum(-1)[None], x, c.T, alpha=-2)
        top_s, top_i = smallest_k(score, self.top_k)
        return (top_s + x.pow(2).sum(-1, keepdim=True)).clamp_min(0), top_i

    def forward(self, x: torch.Tensor, region: str, with_distances: bool = True) -> VQOutput:
        """with_distances: also return the full [B, region] distance matrix (the KL loss needs it)."""
        x = self.prepare(x)
        entries = self.entries()
        dist = self.distances(x, region) if with_distances else None
        if dist is not None:
            top_d, top_i = dist.topk(self.top_k, dim=-1, largest=False)
        else:
            top_d, top_i = self.nearest(x, region, entries)
        weights = torch.softmax(-top_d / self.temperature, dim=-1)
        indices = top_i + self.regions[region][0]
        q = (weights.unsqueeze(-1) * entries[indices]).sum(-2)
        if torch.is_grad_enabled():
            # Eq. 5 as VQ-VAE weights it (see the module docstring): the codebook term moves the
            # entries towards sg[e], alpha * commitment keeps e near sg[q]
            codebook = F.mse_loss(q, x.detach())
            commitment = F.mse_loss(x, q.detach())
        else:  # inference: the loss is not needed, skip two passes over the batch
            codebook = commitment = x.new_zeros(())
        loss = codebook + self.alpha * commitment
        # straight-through e + sg[q - e]: forward value q, gradient of e (the paper's printed form differs)
        quantized = x + (q - x).detach()
        return VQOutput(quantized, indices, loss, weights, dist,
                        {"codebook": codebook, "commitment": commitment})

    def get_output_from_indices(self, indices: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Quantized vectors from token ids [..., K] and weights [..., K] (uniform when None),
        on the codebook's device whatever device the ids come from (e.g. a table on the CPU)."""
        entries = self.entries()
        indices = indices.to(entries.device)
        if weights is None:
            weights = torch.full(indices.shape, 1.0 / indices.shape[-1], device=entries.device, dtype=entries.dtype)
        return (weights.to(entries.device, entries.dtype).unsqueeze(-1) * entries[indices]).sum(-2)

    # ---- usage bookkeeping / dead-entry restarts (training only; not in the paper) ----------------
    @torch.no_grad()
    def mark_used(self, indices: torch.Tensor) -> None:
        used = torch.zeros(self.num_embeddings, dtype=torch.bool, device=self.idle_steps.device)
        used[indices.reshape(-1).to(used.device)] = True
        self.idle_steps += 1
        self.idle_steps[used] = 0

    @torch.no_grad()
    def restart_dead(self, region: str, samples: torch.Tensor, max_idle: int, generator: torch.Generator,
                     noise: float = 0.05, norm: str = "unit", return_rows: bool = False):
        """Re-seat entries of `region` idle for >= max_idle steps on random `samples` (+ noise).

        Not part of the paper (see the module docstring). The random draws come from
        `generator` on its own device (a CPU generator gives the same picks on CPU and CUDA);
        the new rows are moved to the codebook's device before they are written.
        `norm`: "unit" (today: the prepared sample, unit-norm under `l2_norm`) or "codebook" (the
        new rows scaled to the mean norm of the rows that stay, so Adam's steps are the same size
        relative to every row). Returns the number re-seated, or with `return_rows` the global
        row ids (a CPU tensor; the optimizer state of those rows can then be reset)."""
        if norm not in ("unit", "codebook"):
            raise ValueError(f"norm must be unit or codebook, got {norm!r}")
        lo, hi = self.regions[region]
        dead = torch.nonzero(self.idle_steps[lo:hi] >= max_idle).flatten() + lo
        if len(dead) == 0 or len(samples) == 0:
            return torch.empty(0, dtype=torch.long, device="cpu") if return_rows else 0
        pick = torch.randint(len(samples), (len(dead),), generator=generator, device=generator.device)
        new = self.prepare(samples.detach()[pick.to(samples.device)])
        noise_draw = torch.randn(new.shape, generator=generator, device=generator.device)
        new = new + noise * noise_draw.to(new.device) / self.dim ** 0.5
        if norm == "codebook":
            alive = torch.ones(self.num_embeddings, dtype=torch.bool, device=self.codebook.device)
            alive[dead] = False
            norms = self.codebook.data.norm(dim=-1)
            target = norms[alive].mean() if bool(alive.any()) else norms.mean()
            new = F.normalize(new, dim=-1) * target.to(new.device)
        self.codebook.data[dead] = new.to(self.codebook.device, self.codebook.dtype)
        self.idle_steps[dead] = 0
        return dead.cpu() if return_rows else int(len(dead))
