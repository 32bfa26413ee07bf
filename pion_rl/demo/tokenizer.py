"""An offline byte-level tokenizer with a Qwen-style chat template, for tests and the CPU demo.

Every UTF-8 byte is one token (a byte-level BPE with no merges), so any text round-trips exactly, the
vocabulary is fixed (256 bytes + 3 specials = 259 ids) and building it needs no training, no files and no
network: the same ids on every machine.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"

# Qwen's ChatML layout: the turn terminator <|im_end|> is also the eos, so generation stops at the end of
# the assistant turn. `add_generation_prompt` opens an assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tokenizer(model_max_length: int = 4096) -> PreTrainedTokenizerFast:
    """Return the byte-level chat tokenizer: ids 0..255 are bytes, then <|endoftext|> (pad), <|im_start|>,
    <|im_end|> (eos). `model_max_length` only sets the tokenizer's truncation limit."""
    # id == byte value: ByteLevel shows each byte as a printable character, the vocabulary maps it back.
    backend = Tokenizer(models.BPE(vocab=_byte_level_chars(), merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([PAD, IM_START, IM_END])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=CHAT_TEMPLATE,
        pad_token=PAD,
        eos_token=IM_END,
        model_max_length=model_max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _byte_level_chars() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte 0..255 (the ByteLevel pre-tokenizer's alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + shift)] = b
            shift += 1
    return chars
