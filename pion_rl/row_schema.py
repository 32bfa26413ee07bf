"""The columns of verl's RL parquet rows that pion-rl's runs read, and a check of a file against them.

A row (``data_prep/verl_rows.py`` writes them, ``RLHFDataset`` reads them) holds ``data_source`` (the
benchmark, which picks the reward's rules), ``prompt`` (the chat messages) and ``reward_model.ground_truth``
(the reference answer); ``ability`` and ``extra_info`` are optional. The check reads only the file's schema
(the parquet footer), so it costs the same on a 100k-row training file as on a test set.
"""

from __future__ import annotations

import os

#: Top-level columns every row needs, and the field of ``reward_model`` the reward reads.
REQUIRED_COLUMNS = ("data_source", "prompt", "reward_model")
GROUND_TRUTH = "ground_truth"


def schema_problem(path: str | os.PathLike) -> str | None:
    """What keeps the parquet file at ``path`` from being verl rows, as a clause that follows its name
    ("is not a parquet file (...)", "lacks column(s) reward_model"); None if its schema has every required
    column. Reads the schema only; needs pyarrow (imported here, so that importers stay light)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"is not a readable parquet file ({reason})"
    missing = [column for column in REQUIRED_COLUMNS if column not in schema.names]
    if "reward_model" in schema.names:
        reward_model = schema.field("reward_model").type
        if not pa.types.is_struct(reward_model) or reward_model.get_field_index(GROUND_TRUTH) < 0:
            missing.append(f"reward_model.{GROUND_TRUTH}")
    if missing:
        return f"lacks column(s) {', '.join(missing)} (it has {', '.join(schema.names) or 'none'})"
    return None
