"""Generation with vLLM offline inference (GPU): one request per problem with ``n`` samples.

`build_requests` is pure (prompt texts and sampling parameters as plain dicts), so it is tested without vLLM.
"""

from __future__ import annotations

from typing import Any

from .generation import Progress, Request, Sampling, chat_prompts

#: Problems per ``LLM.generate`` call: large enough to keep the engine's batch full, small enough to show progress.
REQUESTS_PER_CALL = 256


def build_requests(tokenizer: Any, requests: list[Request], sampling: Sampling) -> list[tuple[str, dict]]:
    """(prompt text, ``vllm.SamplingParams`` keyword arguments) per request.

    The prompt is the model's chat template with the assistant turn opened; each request draws ``n`` samples
    with its own seed (``sampling.seed`` + ``request.index``), so a problem's samples depend neither on
    batching nor on which job or GPU draws them. No top-k (vLLM's default), as in the hf backend.
    """
    prompts = chat_prompts(tokenizer, requests)
    return [
        (prompt, {"n": request.n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_new_tokens, "seed": sampling.seed + request.index})
        for prompt, request in zip(prompts, requests)
    ]


def generate(model_path: str, requests: list[Request], sampling: Sampling, progress: Progress,
             tensor_parallel_size: int = 1) -> list[list[str]]:
    """The ``n`` sampled response texts of every request, in request order (vLLM on the GPUs this process
    sees, the model split over ``tensor_parallel_size`` of them)."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=sampling.seed, dtype="bfloat16", tensor_parallel_size=tensor_parallel_size)
    built = build_requests(llm.get_tokenizer(), requests, sampling)
    responses = []
    for start in range(0, len(built), REQUESTS_PER_CALL):
        chunk = built[start : start + REQUESTS_PER_CALL]
        outputs = llm.generate([prompt for prompt, _ in chunk], [SamplingParams(**params) for _, params in chunk],
                               use_tqdm=False)
        responses += [[completion.text for completion in output.outputs] for output in outputs]
        progress.update(len(chunk), sum(params["n"] for _, params in chunk))
    return responses
