"""Dictionary learners behind one interface: ``encode`` / ``decode`` / ``dictionary`` / ``fit``.

Every learner maps embeddings x (n, d) to sparse codes z (n, m) and back, x̂ = z D + b, with
D (m, d) the dictionary and b a decoder bias (zero for Matching Pursuit). Interventions are then
one-liners on the codes: keeping only atoms in a boolean mask ``keep`` (m,) is
``sae.decode(z * keep)``, and the paper's bimodal-only embedding Σ_{k∈B} z_k D_k is
``(z * keep) @ sae.dictionary()`` (no bias).

Learners (registry ``LEARNERS``; names double as CLI choices):
- ``mp``: Matching-Pursuit SAE (Iso-Energy paper, docs/METHODS.md §1): k greedy steps on unit-norm atoms.
- ``topk``: TopK SAE (Gao et al. 2024): z = TopK(ReLU(W_e (x − b) + b_e)).
- ``batchtopk``: BatchTopK SAE (Bussmann et al. 2024): keep the k·B largest over the batch;
  at inference a threshold θ (running mean of the smallest kept value) replaces the batch rule.
- ``archetypal``: TopK encoder with the relaxed archetypal dictionary of Fel et al. 2025
  (docs/METHODS.md §5), see ``engine/sae/archetypal.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DictionaryLearner(nn.Module):
    """Base class. Subclasses implement ``sparse_codes`` and ``dictionary``."""

    arch: str = ""

    def __init__(self, d: int, atoms: int, k: int):
        super().__init__()
        self.d, self.atoms, self.k = d, atoms, k

    def dictionary(self) -> torch.Tensor:
        """The atoms D, (m, d)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, d) -> dense codes z (n, m) with at most k non-zeros per row (BatchTopK: k on average)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (n, m) -> x̂ = z D + b, (n, d)."""
        return z @ self.dictionary() + self.bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return z, self.decode(z)

    def init_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """Data-dependent initialisation (atoms from data points); x (N, d) on the model's device."""

    def after_step(self) -> None:
        """Projection after each optimiser step (constraints); no-op by default."""


def _unit_rows(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _random_atoms(x: torch.Tensor, atoms: int, generator: torch.Generator) -> torch.Tensor:
    """Atoms drawn from data rows plus a little noise, (atoms, d), unit norm."""
    idx = torch.randint(0, x.shape[0], (atoms,), generator=generator)
    noise = torch.randn(atoms, x.shape[1], generator=generator) * 0.05
    return _unit_rows(x.detach().cpu()[idx] + noise)


@torch.no_grad()
def mp_select(x: torch.Tensor, D: torch.Tensor, k: int, gram: torch.Tensor | None = None) -> torch.Tensor:
    """The atoms k greedy Matching-Pursuit steps pick for x (n, d) on unit-norm atoms D (m, d): (n, k).

    r ← x; repeat k times: s = r Dᵀ, j = argmax s, r ← r − s_j D_j. Run on correlations:
    s ← s − s_j G_j with the Gram matrix G = D Dᵀ (m, m), which equals (r − s_j D_j) Dᵀ exactly and
    costs O(n m) per step instead of O(n m d); s is updated in place and the rows G_j are gathered
    into one reused buffer, so a step allocates nothing of size n × m. No autograd (selection is
    piecewise constant); ``mp_values`` gives the differentiable values.
    """
    D = D.detach()
    s = x.detach() @ D.T  # (n, m)
    G = D @ D.T if gram is None else gram  # (m, m)
    rows = torch.empty(s.shape, dtype=s.dtype, device=s.device)  # G[j] buffer
    idx = torch.empty(x.shape[0], k, dtype=torch.long, device=x.device)
    for t in range(k):
        j = s.argmax(dim=1)  # (n,)
        idx[:, t] = j
        if t + 1 < k:
            v = s.gather(1, j[:, None])  # (n, 1)
            torch.index_select(G, 0, j, out=rows)
            s.addcmul_(rows, v, value=-1.0)
    return idx


def mp_values(x: torch.Tensor, D: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Matching-Pursuit values of the picks ``idx`` (n, k), differentiable in x and D.

    Step t's value is v_t = ⟨r_{t−1}, D_{j_t}⟩ = ⟨x, D_{j_t}⟩ − Σ_{s<t} v_s ⟨D_{j_s}, D_{j_t}⟩, i.e. the
    unit lower-triangular system (I + L) v = c with c_t = ⟨x, D_{j_t}⟩ and L_{ts} = G_{j_t j_s} (s < t):
    one batched triangular solve on (n, k, k) instead of k steps of (n, m) work in the autograd graph.
    Returns (values (n, k), the picked atoms D[idx] (n, k, d)) so a caller can decode x̂ = Σ_t v_t D_{j_t}.
    """
    DJ = D[idx]  # (n, k, d)
    c = torch.bmm(DJ, x.unsqueeze(2))  # (n, k, 1)
    L = torch.bmm(DJ, DJ.transpose(1, 2))  # (n, k, k): G restricted to the picks
    v = torch.linalg.solve_triangular(L, c, upper=False, unitriangular=True)  # diagonal taken as 1
    return v.squeeze(2), DJ


def matching_pursuit(x: torch.Tensor, D: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k greedy Matching-Pursuit steps of x (n, d) on unit-norm atoms D (m, d).

    r ← x; repeat k times: s = r Dᵀ, j = argmax s, z_j += s_j, r ← r − s_j D_j.
    Picks by ``mp_select`` (Gram matrix, no autograd), values by ``mp_values`` (differentiable).
    Returns (indices (n, k), values (n, k)); an atom may be picked more than once.
    """
    idx = mp_select(x, D, k)
    return idx, mp_values(x, D, idx)[0]


def scatter_codes(idx: torch.Tensor, val: torch.Tensor, atoms: int) -> torch.Tensor:
    """(n, k) indices and values -> dense codes (n, m), summing repeated picks."""
    return torch.zeros(idx.shape[0], atoms, device=val.device, dtype=val.dtype).scatter_add(1, idx, val)


class MPSAE(DictionaryLearner):
    """Matching-Pursuit SAE: no encoder weights; the dictionary is the only parameter.

    Atoms are kept unit-norm by construction: D = W / ‖W‖ row-wise.
    """

    arch = "mp"

    def __init__(self, d: int, atoms: int, k: int):
        super().__init__(d, atoms, k)
        self.weight = nn.Parameter(_unit_rows(torch.randn(atoms, d)))  # (m, d)
        self.register_buffer("bias", torch.zeros(d))  # (d,) always zero: MP has no bias

    def dictionary(self) -> torch.Tensor:
        return _unit_rows(self.weight)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        idx, val = matching_pursuit(x, self.dictionary(), self.k)
        return scatter_codes(idx, val, self.atoms)

    def sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(indices (n, k), values (n, k), x̂ (n, d)): the code in its sparse form and the
        reconstruction Σ_t v_t D_{j_t}, O(n k d) instead of the dense z D's O(n m d)."""
        D = self.dictionary()
        idx = mp_select(x, D, self.k)
        val, DJ = mp_values(x, D, idx)
        return idx, val, torch.bmm(val.unsqueeze(1), DJ).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx, val, x_hat = self.sparse(x)
        return scatter_codes(idx, val, self.atoms), x_hat

    def init_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        with torch.no_grad():
            self.weight.copy_(_random_atoms(x, self.atoms, generator).to(self.weight.device))


def topk_mask(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest entries of each row of pre (n, m), zero the rest."""
    val, idx = pre.topk(k, dim=1)
    return torch.zeros_like(pre).scatter(1, idx, val)


class TopKSAE(DictionaryLearner):
    """TopK SAE: z = TopK(ReLU(W_e (x − b) + b_e)), x̂ = z D + b with unit-norm atoms."""

    arch = "topk"

    def __init__(self, d: int, atoms: int, k: int):
        super().__init__(d, atoms, k)
        self.weight = nn.Parameter(_unit_rows(torch.randn(atoms, d)))  # (m, d) decoder
        self.enc = nn.Parameter(self.weight.detach().clone())  # (m, d) encoder, tied at init
        self.enc_bias = nn.Parameter(torch.zeros(atoms))  # (m,)
        self.bias = nn.Parameter(torch.zeros(d))  # (d,) learned pre/post bias

    def dictionary(self) -> torch.Tensor:
        return _unit_rows(self.weight)

    def pre_codes(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu((x - self.bias) @ self.enc.T + self.enc_bias)  # (n, m)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return topk_mask(self.pre_codes(x), self.k)

    def init_from_data(self, x: torch.Tensor, generator: torch.Generator) -> None:
        with torch.no_grad():
            atoms = _random_atoms(x, self.atoms, generator).to(self.weight.device)
            self.weight.copy_(atoms)
            self.enc.copy_(atoms)
            self.bias.copy_(x.mean(0))


class BatchTopKSAE(TopKSAE):
    """BatchTopK SAE: in training keep the k·n largest pre-codes of the whole batch (n rows).

    A running mean θ of the smallest kept value is tracked during training; in eval mode the
    rule is z = pre · 1[pre > θ], so codes no longer depend on the batch.
    """

    arch = "batchtopk"

    def __init__(self, d: int, atoms: int, k: int, momentum: float = 0.01):
        super().__init__(d, atoms, k)
        self.momentum = momentum
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_codes(x)  # (n, m)
        if not self.training and self.threshold >= 0:
            return pre * (pre > self.threshold)
        flat = pre.reshape(-1)
        val, idx = flat.topk(min(self.k * x.shape[0], flat.numel()))
        z = torch.zeros_like(flat).scatter(0, idx, val).reshape(pre.shape)
        if self.training:
            with torch.no_grad():
                low = val[val > 0].min() if (val > 0).any() else val.new_tensor(0.0)
                t = self.threshold
                self.threshold.copy_(low if t < 0 else (1 - self.momentum) * t + self.momentum * low)
        return z
