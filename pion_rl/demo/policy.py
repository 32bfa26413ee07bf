"""The demo policy: a tiny Qwen3ForCausalLM, and its supervised warm start (cached on disk).

The warm start imitates the reference solutions for a fixed number of steps, enough to learn the answer
format and part of the arithmetic, so GRPO starts from a reward well inside (0, 1).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase, Qwen3Config, Qwen3ForCausalLM

from .config import WARM_START_FIELDS, DemoConfig


def build_policy(config: DemoConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen3ForCausalLM:
    """A randomly initialised Qwen3 (fp32, tied embeddings) seeded by `config.seed`."""
    torch.manual_seed(config.seed)
    model_config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=512,
        # Qwen3's 1e6 base barely rotates over a 150-token context; a small model needs position signal.
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return Qwen3ForCausalLM(model_config)


def supervised_batch(rows: list[dict], tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """Right-padded prompt + solution + eos: `input_ids`, `attention_mask` and `loss_mask` (B, L), the
    loss mask marking the solution and eos tokens (the ones to predict)."""
    sequences, loss_masks = [], []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        answer_ids = tokenizer.encode(row["solution"], add_special_tokens=False) + [tokenizer.eos_token_id]
        sequences.append(prompt_ids + answer_ids)
        loss_masks.append([0] * len(prompt_ids) + [1] * len(answer_ids))
    length = max(map(len, sequences))
    batch = {
        "input_ids": torch.full((len(rows), length), tokenizer.pad_token_id),
        "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
        "loss_mask": torch.zeros(len(rows), length),
    }
    for i, (ids, mask) in enumerate(zip(sequences, loss_masks)):
        batch["input_ids"][i, : len(ids)] = torch.tensor(ids)
        batch["attention_mask"][i, : len(ids)] = 1
        batch["loss_mask"][i, : len(ids)] = torch.tensor(mask, dtype=torch.float)
    return batch


def supervised_loss(model: Qwen3ForCausalLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the solution tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    targets, mask = batch["input_ids"][:, 1:], batch["loss_mask"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
    return (losses * mask).sum() / mask.sum()


def warm_start_key(config: DemoConfig, tokenizer: PreTrainedTokenizerBase, train_rows: list[dict]) -> str:
    """Hash of everything the warm-start weights depend on: its settings, the tokenizer, the training rows."""
    fields = {name: getattr(config, name) for name in WARM_START_FIELDS}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(tokenizer.backend_tokenizer.to_str().encode())
    digest.update(json.dumps(train_rows, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def warm_start(
    config: DemoConfig, tokenizer: PreTrainedTokenizerBase, train_rows: list[dict], log=print
) -> Qwen3ForCausalLM:
    """The warm-started policy: loaded from `out_dir/cache/warm_start-<key>.pt` if present, else trained
    (AdamW, fixed steps, seeded batches) and saved there (see `warm_start_key`)."""
    model = build_policy(config, tokenizer)
    cache = config.out_path / "cache" / f"warm_start-{warm_start_key(config, tokenizer, train_rows)}.pt"
    if cache.exists():
        model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        log(f"warm start: loaded {cache}")
        return model
    log(f"warm start: {config.warm_start_steps} supervised steps (cached afterwards at {cache})")
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.warm_start_lr, weight_decay=0.01)
    rng = random.Random(config.seed)
    model.train()
    # A few minutes uncached: a progress bar on a terminal (stderr), nothing extra in logs and pipes.
    bar = tqdm(range(1, config.warm_start_steps + 1), desc="warm start", file=sys.stderr, disable=None,
               dynamic_ncols=True)
    for step in bar:
        loss = supervised_loss(model, supervised_batch(rng.sample(train_rows, config.warm_start_batch), tokenizer))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % 100 == 0 or step == config.warm_start_steps:
            log(f"warm start: step {step}/{config.warm_start_steps} loss {loss.item():.3f}")
    bar.close()
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".tmp")
    torch.save(model.state_dict(), partial)
    partial.replace(cache)  # atomic: a killed run never leaves a half-written cache
    return model
