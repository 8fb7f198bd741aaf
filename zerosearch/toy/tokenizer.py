"""Word-level tokenizer for the toy world, built with `tokenizers` and wrapped for transformers.

Why word level: the tiny models learn in minutes only if every word is one token and the vocabulary
is a few hundred words. Text is lowercased and split on whitespace and punctuation; the protocol
tags of `zerosearch.rollout.protocol` are added tokens (not "special"), so each is exactly one id and
`skip_special_tokens=True` keeps them while dropping `<pad>`/`<eos>`. Decoding joins tokens with
single spaces, so `decode(encode(t)) == normalize_text(t)` for in-vocabulary text.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from zerosearch.rollout.protocol import (
    FINAL_TURN_HINT,
    INVALID_ACTION,
    POLICY_TEMPLATE,
    TAGS,
    format_documents,
    observation_text,
)
from zerosearch.search.prompts import simulator_prompt

PAD_TOKEN, UNK_TOKEN, EOS_TOKEN = "<pad>", "<unk>", "<eos>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, EOS_TOKEN)
PAD_ID, UNK_ID, EOS_ID = 0, 1, 2  # fixed by the order SPECIAL_TOKENS enter the vocabulary


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")])


def _backend_words(text: str) -> list[str]:
    """Words exactly as the backend tokenizer will see them (tags kept whole)."""
    pre = _pre_tokenizer()
    words: list[str] = []
    pieces = [text.lower()]
    for tag in TAGS:  # cut tags out first, as the added-token matcher does
        split: list[str] = []
        for piece in pieces:
            parts = piece.split(tag)
            for i, part in enumerate(parts):
                if i:
                    split.append(tag)
                split.append(part)
        pieces = split
    for piece in pieces:
        if piece in TAGS:
            words.append(piece)
        elif piece:
            words.extend(w for w, _ in pre.pre_tokenize_str(piece))
    return words


def normalize_text(text: str) -> str:
    """The canonical form the toy tokenizer reproduces: lowercase, punctuation split, single spaces."""
    return " ".join(_backend_words(text))


def protocol_texts() -> list[str]:
    """Every fixed text of the tag protocol, so its words are always in the vocabulary."""
    docs = format_documents([f"d{i}" for i in range(5)])
    return [
        POLICY_TEMPLATE,
        INVALID_ACTION,
        FINAL_TURN_HINT,
        observation_text(docs),
        simulator_prompt("q", "q", ["a"], True),
        simulator_prompt("q", "q", ["a"], False),
        simulator_prompt("q", "q", ["a"], False, answer_in_noisy=True),
        " ".join(str(i) for i in range(100)),
        " ".join(TAGS),
    ]


def build_tokenizer(texts: Iterable[str], *, padding_side: str = "left") -> PreTrainedTokenizerFast:
    """Vocabulary = specials, tags, then every word of `texts` and of the protocol, in first-seen order.

    Left padding is the default because generation pads prompts on the left; set
    `tok.padding_side = "right"` for training batches if preferred.
    """
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for tag in TAGS:
        vocab[tag] = len(vocab)
    for text in [*protocol_texts(), *texts]:
        for word in _backend_words(text):
            if word not in vocab:
                vocab[word] = len(vocab)

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = _pre_tokenizer()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
    )
    if (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) != (PAD_ID, UNK_ID, EOS_ID):
        raise RuntimeError("toy tokenizer special ids moved; PAD_ID/UNK_ID/EOS_ID are wrong")
    return tok


def load_tokenizer(path: str) -> PreTrainedTokenizerFast:
    """Load a saved toy tokenizer (never through AutoTokenizer: no hub look-ups, no class guessing)."""
    return PreTrainedTokenizerFast.from_pretrained(path, clean_up_tokenization_spaces=False)
