"""Scores policies with the paper's final protocol and writes a table beside the paper's Table 3.

One entry: ``python -m pion_rl.evaluate`` (:mod:`.cli`; ``--help`` lists the options). Modules:

- :mod:`.cli`: arguments, data, models (HF directories or verl checkpoints), sampling, scoring.
- :mod:`.hf`, :mod:`.vllm`: the generation backends (transformers ``generate``; vLLM offline inference).
- :mod:`.schedule`, :mod:`.worker`: generation spread over the node's GPUs, one worker process per job.
- :mod:`.stats`: avg@k, standard error over problems, paired bootstrap over problems (pure functions).
- :mod:`.results`: ``results.json``, ``responses.jsonl.gz`` and ``table.md``.
- :mod:`.paper`: the paper's Table 3 rows and protocol, as data.
"""
