"""The cookbook's tokenizer: a byte-level BPE trained on the project's own corpus (SPEC §2.2, §2.4).

It carries the special tokens of the released models (ChatML turns, `<img>`/`</img>` around
`<|vision_pad|>` placeholders, `<think>`, grounding boxes) and their ChatML chat template.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "data_samples" / "tokenizer"

PAD, EOS = "<|endoftext|>", "<|im_end|>"
IMAGE_START, IMAGE_END, IMAGE_PAD = "<img>", "</img>", "<|vision_pad|>"
THINK_START, THINK_END = "<think>", "</think>"
BOX_START, BOX_END = "<|box_start|>", "<|box_end|>"
SPECIAL_TOKENS = [
    PAD, "<|im_start|>", EOS, IMAGE_START, IMAGE_END, IMAGE_PAD, THINK_START, THINK_END,
    BOX_START, BOX_END, "<|object_ref_start|>", "<|object_ref_end|>",
]

# ChatML as the released models write it (SPEC §2.4). "<image>" marks where an image goes; the processor expands
# it into <img> + N x <|vision_pad|> + </img>. Assistant turns are wrapped in {% generation %} so that trainers can
# compute the loss on assistant tokens only. `enable_thinking` pre-fills "<think>\n" (Thinking models).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}{%- generation -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<image>' -}}{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking -%}{{- '<think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; the special tokens get the first ids (0..11)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD,
                                  additional_special_tokens=SPECIAL_TOKENS[1:], model_max_length=4096)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def add_andes_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Give an existing tokenizer (e.g. SmolLM2's) the AndesVL special tokens and chat template; returns #added."""
    missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = EOS
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        tokenizer.pad_token = PAD
    return added


def load_tokenizer(path: str | Path = TOKENIZER_DIR) -> PreTrainedTokenizerBase:
    """Load a saved tokenizer (by default the committed one in data_samples/tokenizer)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer at {path}; build it with `python -m andes_lib.data.corpus` (trains the BPE on the corpus)"
        )
    return AutoTokenizer.from_pretrained(path)
