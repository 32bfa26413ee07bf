"""A deliberately naive Pion, written from the algorithm (pion_rl/optim/ALGORITHM.md), to test pion_rl.optim.Pion,
and the official release's PionOptimizer (``OfficialPion``: its routing, groups and AdamW around that Pion).

One matrix (row block) at a time, explicit generators and explicit factor matrices E; no code shared with
the package.
"""

import math

import torch


def _factor(x, exp_map, degree):
    eye = torch.eye(x.shape[0], dtype=x.dtype)
    if exp_map == "taylor":
        e, power = eye.clone(), eye.clone()
        for j in range(1, degree + 1):
            power = power @ x
            e = e + power / math.factorial(j)
        return e
    if exp_map == "cayley":
        return torch.linalg.inv(eye - x / 2) @ (eye + x / 2)
    return torch.linalg.matrix_exp(x)


#: Newton-Schulz coefficient schedules, copied from their sources: Muon's single triple ("simple") and the
#: five triples the official release's pion_msign.py runs by default ("quintic", in NVIDIA Emerging-Optimizers'
#: muon_utils.py).
NS_SCHEDULES = {
    "simple": [(3.4445, -4.7750, 2.0315)],
    "quintic": [(4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
                (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012)],
}


def _ns_msign(s, steps, coefficients="quintic"):
    schedule = NS_SCHEDULES[coefficients]
    y = s / max(torch.linalg.norm(s).item(), 1e-7)
    for i in range(steps):
        a, b, c = schedule[i % len(schedule)]
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    return y


class ReferencePion:
    """Pion on a list of 2-D tensors (updated in place); options as in the paper."""

    def __init__(self, weights, lr, variant="lie_lie", update_side="both", exp_map="taylor", degree=2,
                 scaling="rms", c=0.2, betas=None, second_moment=False, eps=1e-8, row_block=None,
                 msign_steps=5, msign_coefficients="quintic", msign_lambda=1.0):
        self.weights, self.lr, self.variant, self.side = weights, lr, variant, update_side
        self.exp_map, self.degree, self.scaling, self.c = exp_map, degree, scaling, c
        self.betas = betas or ((0.95, 0.999) if variant == "msign" else (0.9, 0.999))
        self.second_moment, self.eps, self.row_block = second_moment, eps, row_block
        self.msign_steps, self.msign_coefficients, self.msign_lambda = msign_steps, msign_coefficients, msign_lambda
        self.t = 0
        self.state = {}

    def _blocks(self, w):
        rb = self.row_block or w.shape[0]
        return [slice(i, i + rb) for i in range(0, w.shape[0], rb)]

    def step(self, grads):
        self.t += 1
        right = self.side in ("both", "right") or (self.side == "alternate" and self.t % 2 == 1)
        left = self.side in ("both", "left") or (self.side == "alternate" and self.t % 2 == 0)
        b1, b2 = self.betas
        for k, (w, g_full) in enumerate(zip(self.weights, grads)):
            for j, rows in enumerate(self._blocks(w)):
                W, G = w[rows].clone(), g_full[rows]
                st = self.state.setdefault((k, j), {})
                d_out, d_in = W.shape
                if self.variant == "lie_lie":
                    gin = W.T @ G - G.T @ W
                    gout = G @ W.T - W @ G.T
                    st["m_in"] = b1 * st.get("m_in", torch.zeros_like(gin)) + (1 - b1) * gin
                    st["m_out"] = b1 * st.get("m_out", torch.zeros_like(gout)) + (1 - b1) * gout
                    a_in, a_out = -st["m_in"], -st["m_out"]
                    if self.second_moment:
                        st["v_in"] = b2 * st.get("v_in", torch.zeros_like(gin)) + (1 - b2) * gin**2
                        st["v_out"] = b2 * st.get("v_out", torch.zeros_like(gout)) + (1 - b2) * gout**2
                        a_in = -st["m_in"] / (st["v_in"].sqrt() + self.eps)
                        a_out = -st["m_out"] / (st["v_out"].sqrt() + self.eps)
                else:
                    st["m"] = b1 * st.get("m", torch.zeros_like(G)) + (1 - b1) * G
                    m = st["m"]
                    if self.variant == "msign":
                        lam = self.lr * self.msign_lambda
                        a_in = -lam * _ns_msign(0.5 * (W.T @ m - m.T @ W), self.msign_steps, self.msign_coefficients)
                        a_out = -lam * _ns_msign(0.5 * (m @ W.T - W @ m.T), self.msign_steps, self.msign_coefficients)
                    else:
                        if self.second_moment:
                            st["v"] = b2 * st.get("v", torch.zeros_like(m)) + (1 - b2) * m**2
                            m = m / (st["v"].sqrt() + self.eps)
                        a_in = -(W.T @ m - m.T @ W)
                        a_out = -(m @ W.T - W @ m.T)
                if self.variant == "msign":
                    alpha = 1.0
                elif self.scaling == "rms":
                    base = torch.zeros_like(W)
                    if right:
                        base = base + W @ a_in
                    if left:
                        base = base + a_out @ W
                    alpha = self.lr * self.c * math.sqrt(d_out * d_in) / (torch.linalg.norm(base).item() + 1e-12)
                else:
                    alpha = self.lr
                e_in = _factor(alpha * a_in, self.exp_map, self.degree) if right else torch.eye(d_in, dtype=W.dtype)
                e_out = _factor(alpha * a_out, self.exp_map, self.degree) if left else torch.eye(d_out, dtype=W.dtype)
                w[rows] = e_out @ (W @ e_in)
                if self.variant == "transported_ambient_ambient":
                    st["m"] = e_out @ (st["m"] @ e_in)


#: Name fragments the official release's PionOptimizer sends to AdamW, whatever their shape
#: (verl/verl/custom_optimizer/pion.py in GitHub Sphere-AI-Lab/pion), and those it updates per head.
OFFICIAL_ADAMW_NAMES = ("lm_head", "embed_tokens", "word_embeddings", "tok_embeddings", "token_embedding", "wte",
                        "embedding")
OFFICIAL_PER_HEAD_NAMES = ("q_proj", "k_proj", "v_proj", ".query.", ".key.", ".value.")


class OfficialPion:
    """The official release's ``PionOptimizer`` as its recipes configure it, on named tensors (updated in place).

    Routing: a 2-D tensor whose lower-cased name contains none of :data:`OFFICIAL_ADAMW_NAMES` is a Pion
    matrix, with no weight decay; a matrix named like q/k/v (``...weight``) whose rows split into ``head_dim``
    blocks is updated per head. Everything else takes its AdamW, with ``weight_decay``.

    Matrix step: both momenta ``m <- beta1 m + (1 - beta1) skew(.)`` of ``W^T G`` and ``G W^T`` every step;
    odd steps the in side, even the out side; ``A = -m``, ``alpha = lr * 0.2 * sqrt(r c) / (||W A||_F + 1e-12)``
    per block, and ``W + alpha W A + (alpha W A)(alpha A) / 2``, which is ``W E(alpha A)`` with ``E`` the
    degree-2 Taylor factor: :class:`ReferencePion` (``lie_lie``, ``alternate``) computes exactly that.

    AdamW step: ``p <- p (1 - lr wd)``; ``m <- b1 m + (1 - b1) g``; ``v <- b2 v + (1 - b2) g^2``;
    ``p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    """

    def __init__(self, named_weights, lr, head_dim, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.matrices, self.per_head, self.adamw = {}, set(), {}
        for name, w in named_weights:
            if w.ndim == 2 and not any(t in name.lower() for t in OFFICIAL_ADAMW_NAMES):
                per_head = (name.endswith(".weight") and any(t in name for t in OFFICIAL_PER_HEAD_NAMES)
                            and w.shape[0] % head_dim == 0)
                if per_head:
                    self.per_head.add(name)
                self.matrices[name] = ReferencePion([w], lr, update_side="alternate", betas=betas,
                                                    row_block=head_dim if per_head else None)
            else:
                self.adamw[name] = {"w": w, "m": torch.zeros_like(w), "v": torch.zeros_like(w)}
        self.t = 0

    def step(self, grads):
        """``grads``: name -> gradient, for every tensor."""
        self.t += 1
        for name, ref in self.matrices.items():
            ref.step([grads[name]])
        b1, b2 = self.betas
        for name, st in self.adamw.items():
            g = grads[name]
            st["w"].mul_(1 - self.lr * self.weight_decay)
            st["m"] = b1 * st["m"] + (1 - b1) * g
            st["v"] = b2 * st["v"] + (1 - b2) * g * g
            denom = st["v"].sqrt() / math.sqrt(1 - b2**self.t) + self.eps
            st["w"].sub_(self.lr / (1 - b1**self.t) * st["m"] / denom)
