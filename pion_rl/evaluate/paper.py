"""The paper's Table 3 (Pion, Shi et al. 2026: GRPO on DeepMath-103K), as reported, and its protocol.

Numbers are accuracy in percent, copied verbatim (as strings, so the table shows exactly what the paper
printed). Each row block belongs to a base model, recognised from a Hugging Face config by its architecture
and shape, so a fine-tuned checkpoint of that model finds the paper's rows too.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Benchmarks of Table 3 in its column order (pion-rl's data_source names), with the paper's headers.
BENCHMARKS = ("aime24", "aime25", "amc23", "minerva", "olympiadbench")
HEADERS = {"aime24": "AIME24", "aime25": "AIME25", "amc23": "AMC23", "minerva": "Minerva", "olympiadbench": "Olymp"}
#: The paper's protocol: avg@k with these k per benchmark.
DEFAULT_K = {"aime24": 32, "aime25": 32, "amc23": 8, "minerva": 4, "olympiadbench": 8}
#: The sampling the paper's models recommend for reasoning.
TEMPERATURE = 0.6
TOP_P = 0.95


@dataclass(frozen=True)
class BaseModel:
    """A base model of the paper's RL runs: how to recognise it, its recipe's response length, its rows."""

    label: str
    architecture: str
    hidden_size: int
    num_hidden_layers: int
    max_response_length: int
    #: row label -> the six Table 3 cells (BENCHMARKS order, then Avg), verbatim.
    rows: dict[str, tuple[str, str, str, str, str, str]]


BASE_MODELS = (
    BaseModel(
        label="Qwen3-1.7B", architecture="Qwen3ForCausalLM", hidden_size=2048, num_hidden_layers=28,
        max_response_length=4096,
        rows={
            "base": ("4.06", "10.10", "30.27", "16.27", "23.67", "16.87"),
            "AdamW": ("22.71", "20.94", "58.43", "25.91", "46.09", "34.82"),
            "Muon": ("20.42", "19.27", "54.22", "24.08", "42.41", "32.08"),
            "Pion": ("25.42", "21.98", "59.94", "26.84", "46.43", "36.12"),
        },
    ),
    BaseModel(
        label="R1-Distill-1.5B", architecture="Qwen2ForCausalLM", hidden_size=1536, num_hidden_layers=28,
        max_response_length=8192,
        rows={
            "base": ("20.52", "20.83", "54.06", "19.39", "36.20", "30.20"),
            "AdamW": ("25.42", "23.94", "62.65", "23.16", "44.69", "35.97"),
            "Muon": ("29.06", "23.33", "66.72", "22.89", "44.61", "37.32"),
            "Pion": ("30.00", "24.38", "66.87", "23.90", "46.43", "38.32"),
        },
    ),
)


def base_model_of(hf_config: dict) -> BaseModel | None:
    """The paper's base model whose architecture and shape a model's ``config.json`` (as a dict) has, or None."""
    for base in BASE_MODELS:
        if (base.architecture in (hf_config.get("architectures") or [])
                and hf_config.get("hidden_size") == base.hidden_size
                and hf_config.get("num_hidden_layers") == base.num_hidden_layers):
            return base
    return None
