"""Rank code for tests/test_routing_sharded_on_cpu.py: a tiny MoE + MLA model (DeepSeek-V3) under FSDP2."""

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import init_device_mesh

from pion_rl.optim import Muon, Pion
from pion_rl.telemetry import OptimizerTelemetry


def tiny_deepseek():
    import transformers as tf

    config = tf.DeepseekV3Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 max_position_embeddings=64, intermediate_size=48, n_routed_experts=4,
                                 n_shared_experts=1, first_k_dense_replace=0, q_lora_rank=16, kv_lora_rank=16,
                                 qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, n_group=1, topk_group=1,
                                 num_key_value_heads=4, moe_intermediate_size=16, num_experts_per_tok=2)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config).float()


def step_model(model, optimizer, steps) -> dict[str, float]:
    """``steps`` steps under the optimizer telemetry (singular values every step); the last step's metrics."""
    telemetry = OptimizerTelemetry(optimizer, model, spectrum_every=1)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    return telemetry.pop_metrics()


def make_optimizer(name: str, model):
    """Pion, or Muon with fp32 Newton-Schulz: FSDP2's backward sums gradients in another order than one device,
    and bf16 Newton-Schulz turns those last-bit differences into whole bf16 roundings of the update."""
    if name == "pion":
        return Pion(model, lr=1e-2)
    return Muon(model, lr=1e-2, ns_dtype="float32")


def run(name: str, steps: int = 3):
    """Train on FSDP2 over every rank; return full weights, where expert state lives on this rank, the owners and
    the telemetry's metrics."""
    model = tiny_deepseek()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    optimizer = make_optimizer(name, model)
    metrics = step_model(model, optimizer, steps)
    # numpy arrays travel back by value (tensors would go through shared memory the exiting child holds)
    weights = {n: p.full_tensor().detach().numpy().copy() for n, p in model.named_parameters()}
    experts = {n: (tuple(p.to_local().shape), {k: tuple(v.shape) for k, v in optimizer.state[p].items()})
               for n, p in model.named_parameters() if n.endswith(("experts.gate_up_proj", "experts.down_proj"))}
    return weights, experts, optimizer.state_dict()["sharding"]["owners"], metrics
