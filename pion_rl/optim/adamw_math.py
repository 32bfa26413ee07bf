"""AdamW steps on plain tensors (the fallback for embeddings, norms, biases, lm_head), many tensors at once."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Where ``eps`` enters the denominator: ``"after_bias_correction"``, ``sqrt(v_hat) + eps`` (torch.optim.AdamW,
#: the official Pion's fallback), or ``"before_bias_correction"``, ``(sqrt(v) + eps) / sqrt(1 - beta2^t)`` (the
#: official Muon's fallback), that is an eps of ``eps / sqrt(1 - beta2^t)`` on the corrected root: 31.6x larger
#: at step 1 for beta2 = 0.999, the same as the other once ``beta2^t`` is small.
EPS_FORMS = ("after_bias_correction", "before_bias_correction")


def adamw_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[int],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    eps_form: str = "after_bias_correction",
) -> None:
    """Decoupled weight decay and bias-corrected Adam on every ``params[i]``, in place, with torch's
    multi-tensor (``_foreach``) kernels; elementwise the same arithmetic as torch.optim.AdamW's per-tensor path.

    ``params[i]``, ``grads[i]``, ``exp_avgs[i]`` and ``exp_avg_sqs[i]`` share one shape and dtype (the compute
    dtype); ``steps[i]`` is that tensor's step number, counting from 1. ``eps_form`` is one of
    :data:`EPS_FORMS`.
    """
    if eps_form not in EPS_FORMS:
        raise ValueError(f"AdamW: unknown eps_form {eps_form!r}; expected one of {EPS_FORMS}")
    if not params:
        return
    beta1, beta2, lr = *betas, float(lr)  # lr may be a 0-dim tensor; the kernels take Python scalars
    torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    root_corrections = [math.sqrt(1.0 - beta2**step) for step in steps]
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    if eps_form == "after_bias_correction":
        torch._foreach_div_(denoms, root_corrections)
        torch._foreach_add_(denoms, eps)
    else:
        torch._foreach_add_(denoms, eps)
        torch._foreach_div_(denoms, root_corrections)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / (1.0 - beta1**step) for step in steps])
