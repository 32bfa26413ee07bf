"""One AdamW step on plain tensors (the fallback for embeddings, norms, biases, lm_head)."""

from __future__ import annotations

import math

from torch import Tensor

#: Where ``eps`` enters the denominator: ``"after_bias_correction"``, ``sqrt(v_hat) + eps`` (torch.optim.AdamW,
#: the official Pion's fallback), or ``"before_bias_correction"``, ``(sqrt(v) + eps) / sqrt(1 - beta2^t)`` (the
#: official Muon's fallback), that is an eps of ``eps / sqrt(1 - beta2^t)`` on the corrected root: 31.6x larger
#: at step 1 for beta2 = 0.999, the same as the other once ``beta2^t`` is small.
EPS_FORMS = ("after_bias_correction", "before_bias_correction")


def adamw_step(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: int,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    eps_form: str = "after_bias_correction",
) -> None:
    """Decoupled weight decay and bias-corrected Adam, in place; ``step`` counts from 1.

    All tensors share one shape and dtype (the compute dtype). ``eps_form`` is one of :data:`EPS_FORMS`.
    """
    beta1, beta2 = betas
    param.mul_(1.0 - lr * weight_decay)
    exp_avg.lerp_(grad, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2 = 1.0 - beta2**step
    if eps_form == "after_bias_correction":
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
    elif eps_form == "before_bias_correction":
        denom = exp_avg_sq.sqrt().add_(eps).div_(math.sqrt(bias_correction2))
    else:
        raise ValueError(f"AdamW: unknown eps_form {eps_form!r}; expected one of {EPS_FORMS}")
    param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
