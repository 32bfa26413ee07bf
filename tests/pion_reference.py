"""A deliberately naive Pion, written from the algorithm (pion_rl/optim/ALGORITHM.md), to test pion_rl.optim.Pion.

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
    """Pion on a list of 2-D tensors (updated in place); options as in the spec."""

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
