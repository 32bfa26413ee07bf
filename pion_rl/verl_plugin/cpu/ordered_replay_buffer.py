"""A replay buffer that hands the trainer a step's samples in an order fixed by their tokens.

verl 0.9.1's v1 ``ReplayBuffer`` returns a step's trajectories in the order they reached the transfer queue,
which is the order rollouts and rewards happened to finish. That order decides the data-parallel split and the
dynamic-batch micro-batches, so two runs with the same samples sum the gradient in different orders and differ
in the last bits, which the optimizer carries on. Sorting by the token ids (prompt and response) makes the order
a function of the samples alone (equal sequences of one prompt's group are interchangeable; a batch that holds
one prompt twice can still split its samples between the two groups by arrival). Plugged in through verl's own
option:

    trainer.v1.sampler.custom_sampler.path=pkg://pion_rl.verl_plugin.cpu.ordered_replay_buffer
    trainer.v1.sampler.custom_sampler.name=TokenOrderedReplayBuffer

verl passes a custom sampler no DAPO group filtering (``algorithm.filter_groups``), so it is for runs without it.
"""

from __future__ import annotations

import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer


class TokenOrderedReplayBuffer(ReplayBuffer):
    """verl's synchronous replay buffer; each sampled batch sorted by its samples' ``input_ids``."""

    def _materialize_batch(self, partition_id: str, selected_prompt_uids: list[str],
                           partition_snapshot: dict[str, dict]) -> KVBatchMeta:
        batch = super()._materialize_batch(partition_id, selected_prompt_uids, partition_snapshot)
        if not batch.keys:
            return batch
        data = tq.kv_batch_get(keys=batch.keys, partition_id=partition_id, select_fields=["input_ids"])
        sequences = [ids.tolist() for ids in data["input_ids"].unbind()]
        order = sorted(range(len(batch.keys)), key=sequences.__getitem__)
        return KVBatchMeta(partition_id=batch.partition_id, keys=[batch.keys[i] for i in order],
                           tags=[batch.tags[i] for i in order])
