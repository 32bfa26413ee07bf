"""The ``hf`` rollout: verl's agent loop served by transformers on CPU, in place of vLLM.

Three pieces, as verl 0.9.1 splits a rollout backend:

- :class:`HFRolloutServer`, one Ray actor per replica, holds a Hugging Face copy of the policy and answers
  the agent loop's ``generate(request_id, prompt_ids, sampling_params)`` with a :class:`TokenOutput`.
  Requests that arrive together are decoded as one left-padded batch with a KV cache.
- :class:`HFReplica` (``RolloutReplicaRegistry`` name ``hf``) starts that actor next to the replica's first
  trainer worker (hybrid mode: rollout and actor share the workers).
- :class:`HFServerAdapter` (the worker's rollout table, key ``("hf", "async")``) lives in each trainer worker:
  verl's naive checkpoint engine hands it the actor's full HF-named weights after every update, and the
  replica's first rank sends them to the server. Sleep, wake-up, KV-cache and abort calls have nothing to
  free on CPU and do nothing.

Sampling: each request draws from its own generator, seeded by the weights' training step, the request id, the
prompt and how many identical requests (same id, same prompt) came before it under these weights. The count is
needed because verl's v1 agent loop does not number its requests: with ``rollout.full_determinism=true`` every
one of a step's requests has the id ``det-0``, so id and prompt alone would give the ``rollout.n`` samples of a
prompt one seed. With it, a step samples the same sequences in a run resumed from a checkpoint as in the
uninterrupted run, whatever the batching or the arrival order (which of a prompt's sessions gets which sample
follows the arrival order; :mod:`.ordered_replay_buffer` makes the trainer's order independent of it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections import Counter
from collections.abc import Generator
from typing import Any

import ray
import torch
from transformers import AutoModelForCausalLM, DynamicCache
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

#: The agent loop sends a step's requests at once; wait this long for the rest before decoding a batch.
BATCH_WINDOW_S = 0.05


def _server_name(replica_rank: int) -> str:
    return f"pion_rl_hf_rollout_{ray.get_runtime_context().get_job_id()}_{replica_rank}"


def request_seed(global_steps: int | None, request_id: str, prompt_ids: list[int], repeat: int) -> int:
    """A 63-bit seed from the weights' step, the request id, the prompt (token ids) and the request's rank
    (0, 1, ...) among the identical requests under these weights."""
    digest = hashlib.sha256(f"{global_steps}:{request_id}:{repeat}:{prompt_ids}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class RequestSeeds:
    """The seeds of the requests served under one version of the weights (:func:`request_seed`)."""

    def __init__(self):
        self.global_steps: int | None = None
        self._repeats: Counter[tuple[str, tuple[int, ...]]] = Counter()

    def new_weights(self, global_steps: int | None) -> None:
        """Weights from training step ``global_steps`` arrived: count identical requests from 0 again."""
        self.global_steps = global_steps
        self._repeats.clear()

    def next(self, request_id: str, prompt_ids: list[int]) -> int:
        """The seed of the request that arrives now."""
        key = (request_id, tuple(prompt_ids))
        seed = request_seed(self.global_steps, request_id, prompt_ids, self._repeats[key])
        self._repeats[key] += 1
        return seed


def filtered_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(V,) logits -> (V,) logits to sample from: divided by ``temperature``, then everything outside the
    ``top_k`` largest (``top_k`` <= 0: all) and outside the smallest set with probability >= ``top_p`` at -inf."""
    logits = logits / temperature
    if 0 < top_k < logits.numel():
        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[-1], float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        mass_before = probs.cumsum(-1) - probs
        logits = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter(0, order, mass_before >= top_p),
                                    float("-inf"))
    return logits


@torch.no_grad()
def sample_batch(model, prompts: list[list[int]], seeds: list[int], sampling: dict[str, Any], max_new_tokens: list[int],
                 eos_ids: set[int], pad_id: int, logprobs: bool) -> list[tuple[list[int], list[float] | None]]:
    """Decode every prompt (token ids) in one left-padded batch with a KV cache.

    Row ``i`` samples with a generator seeded by ``seeds[i]`` (greedy at temperature 0) and stops after an eos
    id (kept, as vLLM keeps it) or ``max_new_tokens[i]`` tokens. Returns per row the response ids and, with
    ``logprobs``, each token's log-probability under the unmodified model distribution.
    """
    rows, width = len(prompts), max(map(len, prompts))
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention = torch.zeros(rows, width, dtype=torch.long)
    for i, ids in enumerate(prompts):
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        attention[i, width - len(ids):] = 1
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    temperature, top_k, top_p = float(sampling.get("temperature", 1.0)), int(sampling.get("top_k", -1)), \
        float(sampling.get("top_p", 1.0))
    responses: list[list[int]] = [[] for _ in range(rows)]
    token_logprobs: list[list[float]] = [[] for _ in range(rows)]
    done = [False] * rows
    cache = DynamicCache()
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    step_ids = input_ids
    for _ in range(max(max_new_tokens)):
        logits = model(input_ids=step_ids, attention_mask=attention, position_ids=positions, past_key_values=cache,
                       use_cache=True).logits[:, -1].float()
        next_ids = torch.full((rows,), pad_id, dtype=torch.long)
        log_probs = torch.log_softmax(logits, -1) if logprobs else None
        for i in range(rows):
            if done[i]:
                continue
            if temperature == 0:
                token = int(logits[i].argmax())
            else:
                probs = torch.softmax(filtered_logits(logits[i], temperature, top_k, top_p), -1)
                token = int(torch.multinomial(probs, 1, generator=generators[i]))
            responses[i].append(token)
            if logprobs:
                token_logprobs[i].append(float(log_probs[i, token]))
            next_ids[i] = token
            done[i] = token in eos_ids or len(responses[i]) >= max_new_tokens[i]
        if all(done):
            break
        step_ids = next_ids[:, None]
        attention = torch.cat([attention, torch.ones(rows, 1, dtype=torch.long)], dim=1)
        positions = positions[:, -1:] + 1
    return [(ids, token_logprobs[i] if logprobs else None) for i, ids in enumerate(responses)]


class HFRolloutServer:
    """A replica's generation server (an async Ray actor): the policy in fp32 on CPU, batched sampling."""

    def __init__(self, config, model_config, replica_rank: int):
        self.config, self.replica_rank = config, replica_rank
        model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)  # the replica's is raw
        self.model = AutoModelForCausalLM.from_pretrained(
            model_config.local_path, dtype=torch.float32, attn_implementation="sdpa",
            trust_remote_code=model_config.trust_remote_code).eval()
        generation = model_config.generation_config
        eos = getattr(generation, "eos_token_id", None) or model_config.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        pad = model_config.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        self.seeds = RequestSeeds()
        self._pending: list[tuple[int, list[int], dict, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._batcher: asyncio.Task | None = None

    async def load_weights(self, state_dict: dict[str, torch.Tensor], global_steps: int | None) -> None:
        """Take the actor's weights (HF names, full tensors) and the step they come from."""
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {k for k in missing if k == "lm_head.weight" and self.model.config.tie_word_embeddings}
        if set(missing) - tied or unexpected:
            raise ValueError(f"hf rollout: actor weights do not fit the rollout model (missing "
                             f"{sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
        self.seeds.new_weights(global_steps)

    async def generate(self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any],
                       image_data=None, video_data=None, **kwargs) -> TokenOutput:
        if image_data is not None or video_data is not None:
            raise NotImplementedError("hf rollout: text prompts only (no image or video data)")
        if self._batcher is None:
            self._batcher = asyncio.get_running_loop().create_task(self._decode_batches())
        future = asyncio.get_running_loop().create_future()
        prompt_ids = list(prompt_ids)  # seeded on arrival: a request's rank is fixed before any decoding
        self._pending.append((self.seeds.next(request_id, prompt_ids), prompt_ids, dict(sampling_params), future))
        self._wake.set()
        return await future

    def _max_new_tokens(self, prompt_length: int, sampling: dict) -> int:
        # As verl's vLLM server: response_length, capped so prompt + response fits prompt + response length.
        budget = self.config.prompt_length + self.config.response_length - prompt_length
        wanted = sampling.get("max_tokens", sampling.get("max_new_tokens", self.config.response_length))
        return max(1, min(wanted, self.config.response_length, budget))

    async def _decode_batches(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_WINDOW_S)
            self._wake.clear()
            batch, self._pending = self._pending, []
            groups: dict[tuple, list] = {}
            for request in batch:
                params = {k: v for k, v in request[2].items() if k not in ("max_tokens", "max_new_tokens")}
                groups.setdefault(tuple(sorted(params.items())), []).append(request)
            for requests in groups.values():
                try:
                    results = await asyncio.to_thread(self._decode, requests)
                except Exception as error:  # noqa: BLE001 - the waiting requests get the error, the server lives
                    for *_, future in requests:
                        future.set_exception(error)
                    continue
                for (*_, future), (ids, logprobs) in zip(requests, results):
                    future.set_result(TokenOutput(token_ids=ids, log_probs=logprobs, stop_reason="completed",
                                                  extra_fields={"global_steps": self.seeds.global_steps}))

    def _decode(self, requests: list) -> list[tuple[list[int], list[float] | None]]:
        sampling = requests[0][2]
        return sample_batch(
            self.model, [r[1] for r in requests], [r[0] for r in requests],
            sampling, [self._max_new_tokens(len(r[1]), r[2]) for r in requests], self.eos_ids, self.pad_id,
            logprobs=bool(sampling.get("logprobs")))

    # Nothing to free or pause on CPU: the control calls verl makes around weight updates.
    async def wake_up(self): pass
    async def sleep(self): pass
    async def abort_all_requests(self, reject_request: bool = False): pass
    async def resume_generation(self): pass
    async def clear_kv_cache(self): pass
    async def release_kv_cache(self): pass
    async def resume_kv_cache(self): pass
    async def start_profile(self, **kwargs): pass
    async def stop_profile(self): pass


class HFReplica(RolloutReplica):
    """One :class:`HFRolloutServer` per replica, on the node of the replica's first worker (hybrid mode only)."""

    async def launch_servers(self):
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(f"hf rollout runs in the trainer's workers (hybrid mode), not "
                                      f"{self.rollout_mode.value}: keep actor_rollout_ref.hybrid_engine=true")
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        server = ray.remote(HFRolloutServer).options(
            name=_server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        await server.__ray_ready__.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf-rollout-{self.replica_rank}"  # the load balancer's key; no HTTP endpoint


class HFServerAdapter(BaseRollout):
    """The trainer worker's side of the ``hf`` rollout: forwards the actor's weights to the replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        size = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                * self.config.pipeline_model_parallel_size)
        rank = int(os.environ["RANK"])
        self.replica_rank = rank // size if replica_rank == -1 else replica_rank
        self.sends_weights = rank % size == 0  # one sender per replica
        self._server = None

    async def resume(self, tags: list[str]):
        pass  # weights and cache stay in memory

    async def release(self):
        pass

    async def update_weights(self, weights: Generator[tuple[str, torch.Tensor], None, None],
                             wire_format: str = "named_tensors", peft_config=None, global_steps: int | None = None,
                             **kwargs):
        if wire_format != "named_tensors" or peft_config is not None:
            raise NotImplementedError(f"hf rollout takes full named tensors (got wire_format={wire_format!r}"
                                      f"{', a LoRA adapter' if peft_config is not None else ''})")
        # Every rank drains the generator: it all-gathers the FSDP shards, a collective.
        state = {name: tensor.detach().to("cpu", torch.float32, copy=True) for name, tensor in weights}
        if self.sends_weights:
            if self._server is None:
                self._server = ray.get_actor(_server_name(self.replica_rank))
            await self._server.load_weights.remote(state, global_steps)
