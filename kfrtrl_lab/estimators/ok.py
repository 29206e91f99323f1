"""Optimal Kronecker-sum approximation OK-r (Benzing et al., ICML 2019; algorithms.md, section 5a).

Per lane the influence estimate is a sum of r Kronecker pairs, Ĝ_t = Σ_i u_i ⊗ A_i
(u_i ∈ R^a, a = m+n+1; A_i ∈ R^{n_s × r_g n}). One step:

1. Propagate and append: M_i = H_t A_i (i ≤ r, one batched product), M_{r+1} = D_t, v_i = u_i,
   v_{r+1} = x̂_t; the target is T = Σ_j v_j ⊗ M_j (rank ≤ r+1).
2. Orthogonalise both sides: V = q R by Householder QR (V is a × (r+1), cheap). On the large side
   (M is (n_s·r_g n) × (r+1)) a factor R' with R'ᵀR' = MᵀM + (clamp) comes from the eigen-
   decomposition of the (r+1)×(r+1) Gram matrix, eigenvalues clamped at ε·λ_max: one BLAS-3 Gram
   product instead of a QR of the large matrix, and unbiased whatever the clamp, because the
   directions are expressed through R'^{-1} and T = V R^{-1} C R'^{-ᵀ} Mᵀ holds exactly for any
   invertible R' (the clamp only makes the Ã_j below it slightly non-orthonormal).
3. Core C = R R'ᵀ = U diag(s) Wᵀ; ũ_j = q U_j, Ã_j = M R'^{-1} W_j; T = Σ_j s_j ũ_j ⊗ Ã_j.
4. Split: q* = the smallest q with (r − q) s_{q+1} ≤ Σ_{i>q} s_i; directions 1..q* are kept
   exactly as pairs (√s_j ũ_j, √s_j Ã_j).
5. Mix the k + 1 others (k = r − q*, S their sum of s) into k pairs: δ_j = k s_j / S,
   w_j = √(1 − δ_j), P = the rows of the Householder reflection taking w to the last axis
   (orthonormal, orthogonal to w), c_j = ±1 fresh per lane per step, and for output slot i

       symmetric (minimum variance):  u'_i = √(S/k) Σ_j P_ij c_j ũ_j,          A'_i = √(S/k) Σ_j P_ij c_j Ã_j
       official code's scaling:       u'_i = √(S/k) Σ_j P_ij c_j s_j^{-1/2} ũ_j, A'_i = √(S/k) Σ_j P_ij c_j s_j^{1/2} Ã_j

   E[c_j c_l] = δ_jl and PᵀP = I − wwᵀ give E[Σ_i u'_i ⊗ A'_i] = Σ_j (S/k)(1 − w_j²) ũ_j ⊗ Ã_j
   = Σ_j s_j ũ_j ⊗ Ã_j: unbiased. Exact (no noise) whenever rank T ≤ r, e.g. the first r steps
   after a reset.
6. Rebalance each pair to equal norms (the product is unchanged).
7. dL_t/dW ≈ Σ_i u'_iᵀ ((∂L_t/∂s_t) A'_i).

All of it is batched over lanes and pairs: the new pairs are small coefficient matrices applied
to [u | x̂] and [M], so the only passes over the r·n_s·r_g n numbers of a lane are the propagation,
the Gram product and the reconstruction; D_t enters both through its r_g·n_s nonzeros only.
Storage: the A_i are kept factored, A_i = Σ_j coef_ij M_j + coef_d,i D_{t-1} (M_j = H_{t-1} A_j, transposed,
(B, r, r_g n, n_s)), so that each step's reconstruction, product H_t A_i, Gram and gradient rows pass
over a block of lanes while it is in the CPU's cache; ``At`` materialises them.
"""

from __future__ import annotations

import torch

from ..cells.base import D_diagonals_stacked, D_nonzeros_stacked, add_sparse_D
from .base import layout_device_type, rademacher
from .kron_sum import KroneckerSum
from .registry import register_method

SCALINGS = ("symmetric", "official")


@register_method
class OK(KroneckerSum):
    """OK-r with the minimum-variance ("symmetric") mixing."""

    name = "ok-<r>"
    stochastic = True
    capturable = False  # torch.linalg's eigh and svd check their results on the host
    scaling = "symmetric"

    def __init__(self, model, batch_size, r: int, **kwargs):
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            raise ValueError(f"r must be a positive int, got {r!r}")
        self.pairs = r
        self.name = self.name.replace("<r>", str(r))  # before the base checks, which name the method
        super().__init__(model, batch_size, **kwargs)

    #: bytes of A's and M's a block of lanes may hold so that it stays in a CPU's last-level cache
    #: from the product H_t A_i to the Gram and the gradient rows that read it again (see _advance)
    cache_bytes = 4 * 2**20

    def _init_influence(self):
        L, r = self.batch_size, self.pairs
        c = self.cell
        cols, ns = c.weight.shape[1], c.state_size
        self.u = self._zeros(r, c.extended_size)
        # The A's are kept factored, A_i = Σ_j coef[i, j] M_j + coef_d[i] D_{t-1} with M_j = H_{t-1} A_j
        # of the step before, and materialised block by block just before H_t multiplies them: the
        # reconstruction, the product, the Gram and the gradient rows then pass over a block while it
        # is in cache, where each pass over all lanes would stream every A or M from memory again.
        self._M = self._zeros(r, cols, ns)
        self._coef = torch.eye(r, device=self.device, dtype=self.dtype).expand(L, r, r).clone()
        self._coef_d = self._zeros(r)
        self._d = self._zeros(c.slots, c.gate_blocks, c.hidden_size)  # D_{t-1}'s nonzeros (CellStep.d)
        per_lane = 2 * r * cols * ns * self._M.element_size()
        on_cpu = layout_device_type(self.device) == "cpu"
        self._block = max(1, min(L, self.cache_bytes // per_lane)) if on_cpu else L
        self._A_block = torch.empty(self._block, r, cols, ns, device=self.device, dtype=self.dtype)
        self._gram_M = self._zeros(r, r)
        self._rows_M = self._zeros(r, cols)  # (∂L_t/∂s_t) M_j, when the cotangent is known in time
        self._rows_for = None  # the cotangent those rows were made with

    @property
    def At(self) -> torch.Tensor:
        """The A_i of every lane, stored transposed, (B, r, r_g n, n_s), materialised from the factors."""
        L, r = self.batch_size, self.pairs
        At = torch.bmm(self._coef, self._M.view(L, r, -1)).view_as(self._M)
        add_sparse_D(At, self._coef_d, self._d)
        return At

    @At.setter
    def At(self, value: torch.Tensor) -> None:
        if tuple(value.shape) != tuple(self._M.shape):
            raise ValueError(f"At must have shape {tuple(self._M.shape)}, got {tuple(value.shape)}")
        self._M = value.to(device=self.device, dtype=self.dtype).contiguous().clone()
        self._coef = torch.eye(self.pairs, device=self.device, dtype=self.dtype).expand_as(self._coef).clone()
        self._coef_d = torch.zeros_like(self._coef_d)
        self._rows_for = None

    def _advance(self, step):
        L, r = self.batch_size, self.pairs
        M = self._M
        ns = M.shape[-1]
        H_T = step.H_dense().transpose(1, 2)  # a reset lane's H_t is 0, so its M_i = 0
        g = step.state_cotangent
        share_d = D_nonzeros_stacked(self._coef_d, self._d)  # coef_d[i]·D_{t-1} on its nonzeros
        M_on_d = torch.empty_like(share_d)  # M_i's entries where D_t may be nonzero
        for lo in range(0, L, self._block):  # blocks of lanes sized to the cache; one block on a GPU
            hi = min(L, lo + self._block)
            A = self._A_block[: hi - lo]
            torch.bmm(self._coef[lo:hi], M[lo:hi].view(hi - lo, r, -1), out=A.view(hi - lo, r, -1))
            D_diagonals_stacked(A, self._d).add_(share_d[lo:hi])
            Mb = M[lo:hi].view(hi - lo, -1, ns)
            torch.bmm(A.view(hi - lo, -1, ns), H_T[lo:hi], out=Mb)  # M_i = H_t A_i, (H A_i)ᵀ stored
            Mf = M[lo:hi].view(hi - lo, r, -1)
            torch.bmm(Mf, Mf.transpose(1, 2), out=self._gram_M[lo:hi])
            M_on_d[lo:hi] = D_diagonals_stacked(M[lo:hi], step.d)
            if g is not None:  # as a row times Mᵀ: BLAS runs it twice as fast as M @ column
                torch.bmm(g[lo:hi, None, :], Mb.transpose(1, 2), out=self._rows_M[lo:hi].view(hi - lo, 1, -1))
        u = self.u * step.keep_factor[:, None, None]  # a reset lane's pairs are gone (M_i = 0 there too)
        V = torch.cat([u, step.x_hat[:, None]], dim=1).transpose(1, 2)  # (L, a, r+1)
        cross = (M_on_d * step.d.permute(0, 2, 1, 3)[:, None]).sum(dim=(2, 3, 4))  # ⟨M_i, D_t⟩ (sparse_D_inner)
        self.u, coef_m = self._reduce(V, self._gram(step, cross))
        self._coef, self._coef_d, self._d = coef_m[:, :, :r].contiguous(), coef_m[:, :, r].contiguous(), step.d
        self._rows_for = g
        if g is not None:
            self._rows_D = step.D_transpose_times(g)

    def _gram(self, step, cross):
        """The Gram matrix of the columns [H A_1 … H A_r, D_t], (L, r+1, r+1), from the H A block
        and ⟨H A_i, D_t⟩ that _advance took, and ‖D_t‖²."""
        top = torch.cat([self._gram_M, cross[:, :, None]], dim=2)
        bottom = torch.cat([cross, step.D_norm().square()[:, None]], dim=1)
        return torch.cat([top, bottom[:, None, :]], dim=1)

    def _pair_rows(self, dl_ds):
        """(∂L_t/∂s_t) A_i = Σ_j coef[i, j] (∂L_t/∂s_t) M_j + coef_d[i] (∂L_t/∂s_t) D_t, from the rows
        _advance took while each block was in cache (any other cotangent: from the materialised A's)."""
        if dl_ds is not self._rows_for:
            return super()._pair_rows(dl_ds)
        return torch.bmm(self._coef, self._rows_M) + self._coef_d[:, :, None] * self._rows_D[:, None, :]

    def _reduce(self, V, G):
        """From V = [u_1 … u_r, x̂] (L, a, k) and the Gram G of M (L, k, k): the new u's (L, r, a)
        and the coefficients (L, r, k) that make the new A's from M's columns (steps 2–6).

        These small matrices are factored in float64 whatever the working precision: it costs
        nothing next to the O(n³) products, and float32 LAPACK fails on Grams whose entries span
        the 10^40 range that decayed pairs reach (NaN eigenvalues from denormal entries)."""
        eps = torch.finfo(V.dtype).eps  # G's accuracy: the clamp below is relative to it
        q, U, s, Wh, Rp_inv = self._directions(V.double(), G.double(), eps)
        kept, S, k_slots = self._split(s)
        coef_u, coef_a = self._mix(s, kept, S, k_slots)
        new_u = coef_u @ U.transpose(1, 2) @ q.transpose(1, 2)  # u'_i = Σ_j coef_u[i, j] q U_j
        coef_m = coef_a @ Wh @ Rp_inv.transpose(1, 2)  # A'_i = Σ_j coef_a[i, j] M R'^{-1} W_j
        return new_u.to(V.dtype), coef_m.to(V.dtype)

    def _directions(self, V, G, eps):
        """Steps 2–3: T = Σ_j s_j ũ_j ⊗ Ã_j with ũ_j = q U_j and Ã_j = M R'^{-1} W_j (s descending);
        eigenvalues of G below k·eps·λ_max are raised to it (G is only that accurate)."""
        L, a, k = V.shape
        q, R = torch.linalg.qr(V)  # Householder: dependent or zero columns give zero rows of R
        if a < k:  # more pairs than x̂ has entries: pad to k directions (the extra ones are zero)
            q = torch.cat([q, q.new_zeros(L, a, k - a)], dim=2)
            R = torch.cat([R, R.new_zeros(L, k - a, k)], dim=1)
        lam, E = torch.linalg.eigh(G)
        lam = lam.clamp_min((k * eps * lam[:, -1:]).clamp_min(torch.finfo(V.dtype).tiny))
        root = lam.sqrt()
        Rp_inv = E / root[:, None, :]  # R'^{-1} for R' = diag(√λ) Eᵀ
        U, s, Wh = torch.linalg.svd(R @ (E * root[:, None, :]))  # the core C = R R'ᵀ
        # A direction at the SVD's own rounding level is a zero of an exactly low-rank target; left
        # in, it would be mixed with a real one and add noise of size √(s_r · s_{r+1}) ≈ √ε.
        s = torch.where(s <= k * torch.finfo(s.dtype).eps * s[:, :1], torch.zeros_like(s), s)
        return q, U, s, Wh, Rp_inv

    def _split(self, s):
        """Step 4: (kept (L, k) bool: directions 1..q*, S = Σ of the mixed s, k = r − q* slots)."""
        k = s.shape[1]
        r, eps = k - 1, torch.finfo(s.dtype).eps
        tail = s.flip(-1).cumsum(-1).flip(-1)  # Σ_{i ≥ q} s_i
        slots = torch.arange(r, 0, -1, device=s.device, dtype=s.dtype)  # r − q for q = 0..r−1
        fits = slots * s[:, :r] <= tail[:, :r] * (1 + 4 * k * eps)  # always true at q = r − 1
        q_star = fits.to(torch.int8).argmax(dim=1)  # the first q that fits
        kept = torch.arange(k, device=s.device)[None, :] < q_star[:, None]
        return kept, (s * ~kept).sum(dim=1), (r - q_star).to(s.dtype)

    def _mix(self, s, kept, S, k_slots):
        """Steps 5–6: coefficients (L, r, k) of the new pairs over the directions ũ_j and Ã_j."""
        L, k = s.shape
        r, eps = k - 1, torch.finfo(s.dtype).eps
        mixed = ~kept
        live = S > 0
        S_safe = torch.where(live, S, torch.ones_like(S))
        # w over the mixed set, and P from the Householder reflection taking w to the last axis
        delta = torch.where(mixed, k_slots[:, None] * s / S_safe[:, None], torch.zeros_like(s))
        w = torch.where(mixed, (1 - delta).clamp_min(0).sqrt(), torch.zeros_like(s))
        last = torch.zeros_like(s)
        last[:, r] = 1
        w = torch.where(live[:, None], w, last)
        v = w - last
        vv = (v * v).sum(dim=1)
        reflect = torch.where(vv > eps, 2 / vv.clamp_min(eps), torch.zeros_like(vv))
        P = torch.eye(k, dtype=s.dtype, device=s.device) - reflect[:, None, None] * v[:, :, None] * v[:, None, :]
        P = P[:, :r, :]  # rows 0..q*-1 are e_i (kept), rows q*..r-1 span w⊥ on the mixed set

        signs = torch.where(kept, torch.ones_like(s), rademacher((L, k), self.random, s.dtype))
        root_s = s.sqrt()
        if self.scaling == "symmetric":
            col_u = col_a = torch.where(kept, root_s, torch.ones_like(s))
        else:  # the official code's: s^{-1/2} on u, s^{+1/2} on A for the mixed directions
            positive = s > 0
            col_u = torch.where(kept, root_s, torch.where(positive, 1 / root_s.clamp_min(1e-300), torch.zeros_like(s)))
            col_a = torch.where(kept, root_s, torch.where(positive, root_s, torch.zeros_like(s)))
        row = torch.where(kept[:, :r], torch.ones_like(s[:, :r]), (S / k_slots).sqrt()[:, None])
        coef_u = row[:, :, None] * P * (signs * col_u)[:, None, :]
        coef_a = row[:, :, None] * P * (signs * col_a)[:, None, :]

        # step 6: equal norms (ũ orthonormal; Ã orthonormal up to the clamp), product unchanged
        norm_u, norm_a = coef_u.norm(dim=2), coef_a.norm(dim=2)
        both = (norm_u > 0) & (norm_a > 0)
        t = torch.where(both, (norm_a / norm_u.clamp_min(1e-300)).sqrt(), torch.ones_like(norm_u))
        return coef_u * t[:, :, None], coef_a / t[:, :, None]


@register_method
class OKOfficial(OK):
    """OK-r with the official code's scaling (s^{∓1/2} on the mixed pairs): the published logs' estimator."""

    name = "ok-<r>-official"
    scaling = "official"
