"""Generation with transformers ``generate`` (CPU, small models, tests; same output as the vLLM backend)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .generation import Progress, Request, Sampling, chat_prompts

#: Sequences (prompts x samples) per ``generate`` call.
BATCH_SEQUENCES = 256


def generate(model_path: str, requests: list[Request], sampling: Sampling, progress: Progress) -> list[list[str]]:
    """The ``n`` sampled response texts of every request, in request order.

    Responses stop at the tokenizer's eos or after ``sampling.max_new_tokens`` tokens, whichever comes first,
    and never run past the model's context (``max_position_embeddings``). Batches hold requests with the
    same ``n``; each batch is seeded with ``sampling.seed`` plus its first request's ``index``.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch.bfloat16 if device == "cuda" else torch.float32
    ).to(device).eval()
    prompts = chat_prompts(tokenizer, requests)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    responses: list[list[str] | None] = [None] * len(requests)
    for n in sorted({r.n for r in requests}):
        indices = [i for i, r in enumerate(requests) if r.n == n]
        per_batch = max(1, BATCH_SEQUENCES // n)
        for start in range(0, len(indices), per_batch):
            batch = indices[start : start + per_batch]
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                padding_side="left", add_special_tokens=False).to(device)
            prompt_length = encoded["input_ids"].shape[1]
            torch.manual_seed(sampling.seed + requests[batch[0]].index)
            with torch.no_grad():
                output = model.generate(
                    **encoded,
                    **_sampling_kwargs(sampling),
                    max_new_tokens=_max_new_tokens(model, prompt_length, sampling.max_new_tokens),
                    num_return_sequences=n,
                    pad_token_id=pad_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            texts = tokenizer.batch_decode(output[:, prompt_length:], skip_special_tokens=True)
            for j, i in enumerate(batch):
                responses[i] = texts[j * n : (j + 1) * n]
            progress.update(len(batch), len(batch) * n)
    return responses


def _sampling_kwargs(sampling: Sampling) -> dict:
    if sampling.temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}


def _max_new_tokens(model, prompt_length: int, requested: int) -> int:
    context = getattr(model.config, "max_position_embeddings", None)
    if context is None:
        return requested
    room = context - prompt_length
    if room < 1:
        raise ValueError(f"a prompt of {prompt_length} tokens leaves no room in the model's {context}-token context")
    return min(requested, room)
