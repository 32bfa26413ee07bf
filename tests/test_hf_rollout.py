"""The hf rollout's sampler (pion_rl.verl_plugin.cpu.hf_rollout), against transformers' own generate."""

from __future__ import annotations

import pytest
import torch

from pion_rl.demo.config import DemoConfig
from pion_rl.demo.policy import build_policy
from pion_rl.demo.tokenizer import build_tokenizer
from pion_rl.verl_plugin.cpu.hf_rollout import RequestSeeds, filtered_logits, request_seed, sample_batch


@pytest.fixture(scope="module")
def policy():
    tokenizer = build_tokenizer(merges=True)
    model = build_policy(DemoConfig(), tokenizer).eval()
    chat = [{"role": "user", "content": "What is 41 - 7?"}]
    short = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    long = tokenizer.apply_chat_template([{"role": "user", "content": "What is 41 - 7 + 12 * 3?"}],
                                         add_generation_prompt=True, tokenize=True, return_dict=False)
    return model, tokenizer, list(short), list(long)


def test_filtered_logits_keep_the_top_k_and_the_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(filtered_logits(logits, 1.0, 2, 1.0)).tolist() == [True, True, False, False]
    # 0.5 + 0.3 = 0.8 < 0.85 <= 0.95: the nucleus for top_p 0.85 is the first three tokens.
    assert torch.isfinite(filtered_logits(logits, 1.0, -1, 0.85)).tolist() == [True, True, True, False]
    assert torch.allclose(filtered_logits(logits, 0.5, -1, 1.0), logits / 0.5)


def test_greedy_decoding_matches_transformers_generate(policy):
    model, tokenizer, short, long = policy
    eos = {tokenizer.eos_token_id}
    ours = sample_batch(model, [short, long], [0, 0], {"temperature": 0}, [12, 12], eos, tokenizer.pad_token_id,
                        logprobs=True)
    for prompt, (ids, logprobs) in zip([short, long], ours):
        reference = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        assert ids == reference[0, len(prompt):].tolist()
        with torch.no_grad():
            full = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1:-1], -1)
        expected = full.gather(-1, torch.tensor(ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-4)


def test_a_request_samples_the_same_tokens_whatever_else_is_in_its_batch(policy):
    model, tokenizer, short, long = policy
    args = ({"temperature": 1.0, "top_p": 1.0, "top_k": -1},)
    seed_a, seed_b = request_seed(3, "det-0", short, 0), request_seed(3, "det-0", short, 1)
    alone = sample_batch(model, [short], [seed_a], *args, [16], set(), 0, False)
    batched = sample_batch(model, [long, short, short], [seed_b, seed_a, seed_b], *args, [16] * 3, set(), 0, False)
    assert batched[1] == alone[0]
    assert batched[2] != alone[0]  # another seed, another sample
    assert request_seed(3, "det-0", short, 0) == seed_a != request_seed(4, "det-0", short, 0)


def test_identical_requests_get_distinct_seeds_that_repeat_under_the_same_weights(policy):
    _, _, short, long = policy
    seeds = RequestSeeds()

    def a_step(global_steps: int) -> list[int]:
        # verl's v1 agent loop sends every request of a step as "det-0": rollout.n of each prompt, interleaved.
        seeds.new_weights(global_steps)
        return [seeds.next("det-0", prompt) for prompt in (short, long, short, long, short)]

    step_2 = a_step(2)
    assert len(set(step_2)) == 5
    assert a_step(2) == step_2  # a resumed run, weights from the same step
    assert not set(a_step(3)) & set(step_2)
