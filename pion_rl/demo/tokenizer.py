"""An offline byte-level BPE tokenizer with a Qwen-style chat template, for tests and the CPU demo.

Byte-level, so any text round-trips exactly. By default every UTF-8 byte is one token, so token counts are
predictable (tests rely on it). With `merges=True` it adds BPE merges trained in milliseconds on a fixed
in-code corpus of chat-formatted arithmetic in DeepMath's prompt format, which shortens the demo's prompts
from ~125 tokens to ~45 (digits stay single tokens, as in Qwen's tokenizer). Building needs no files and no
network and gives the same ids on every machine (the BPE trainer is deterministic).
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)  # ids 0, 1, 2
MAX_MERGES = 128  # the corpus below yields 73 merges; the cap only bounds them

# Qwen's ChatML layout: the turn terminator <|im_end|> is also the eos, so generation stops at the end of
# the assistant turn. `add_generation_prompt` opens an assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."


def build_tokenizer(merges: bool = False, model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """Return the chat tokenizer: <|endoftext|> (pad, id 0), <|im_start|> (1), <|im_end|> (eos, 2), then the
    256 byte tokens (259 ids: one token per byte), plus the trained merges if `merges`. `model_max_length`
    only sets the tokenizer's truncation limit."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIAL_TOKENS) + 256 + (MAX_MERGES if merges else 0),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=CHAT_TEMPLATE,
        pad_token=PAD,
        eos_token=IM_END,
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _corpus() -> list[str]:
    """Chat-formatted arithmetic questions and answers: what the merges are fitted to."""
    texts = []
    for a in range(20):
        for b in range(10):
            for op, value in (("+", a + b), ("-", a - b), ("*", a * b)):
                texts.append(
                    f"{IM_START}user\nWhat is {a} {op} {b}?{_INSTRUCTION}{IM_END}\n"
                    f"{IM_START}assistant\n{a} {op} {b} = {value}. The answer is \\boxed{{{value}}}.{IM_END}\n"
                )
    return texts
