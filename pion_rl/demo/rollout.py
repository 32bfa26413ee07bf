"""Group sampling with `transformers` generation, scoring with pion-rl's reward, and response log-probs.

Shapes: N prompts, G samples per prompt, B = N * G sequences, P padded prompt tokens, T response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from verl.utils.model import compute_position_id_with_mask
from verl.utils.torch_functional import get_response_mask, logprobs_from_logits

from pion_rl.reward import compute_score


@dataclass
class Rollout:
    """B sampled responses. `input_ids`/`attention_mask` (B, P + T) hold left-padded prompt then response;
    `response_mask` (B, T) marks generated tokens up to and including eos; `group_ids` (B,) the prompt
    index of each sequence; `scores`/`correct` (B,) the reward and its accuracy bit."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    group_ids: np.ndarray
    scores: torch.Tensor
    correct: torch.Tensor
    responses: list[str]

    @property
    def prompt_length(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]


@torch.no_grad()
def sample_groups(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
) -> Rollout:
    """Sample `group_size` responses per row (ancestral sampling: no top-k/top-p, as verl's rollout) and
    score each with `pion_rl.reward.compute_score` against the row's ground truth."""
    prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    model.eval()
    output = model.generate(
        **encoded,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        num_return_sequences=group_size,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    prompt_mask = encoded["attention_mask"].repeat_interleave(group_size, dim=0)
    response_ids = output[:, prompt_mask.shape[1] :]
    response_mask = get_response_mask(response_ids, eos_token=tokenizer.eos_token_id)
    responses = tokenizer.batch_decode(response_ids * response_mask, skip_special_tokens=True)
    group_ids = np.repeat(np.arange(len(rows)), group_size)
    results = [
        compute_score(rows[g]["data_source"], text, rows[g]["reward_model"]["ground_truth"])
        for g, text in zip(group_ids, responses)
    ]
    return Rollout(
        input_ids=output,
        attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
        response_mask=response_mask,
        group_ids=group_ids,
        scores=torch.tensor([float(r["score"]) for r in results]),
        correct=torch.tensor([float(r["acc"]) for r in results]),
        responses=responses,
    )


def response_log_probs(model: PreTrainedModel, rollout: Rollout) -> torch.Tensor:
    """(B, T) log-probability of each response token under `model` (differentiable when grad is on).

    Position ids count real tokens only, as verl computes them, so left padding does not shift them."""
    logits = model(
        input_ids=rollout.input_ids,
        attention_mask=rollout.attention_mask,
        position_ids=compute_position_id_with_mask(rollout.attention_mask),
    ).logits
    # logits at position t predict token t + 1: the response starts at prompt_length.
    response_logits = logits[:, rollout.prompt_length - 1 : -1].float()
    return logprobs_from_logits(response_logits, rollout.input_ids[:, rollout.prompt_length :])
