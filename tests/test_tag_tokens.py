"""Real tokenizers split `<search>` into pieces; ensure_tag_tokens must make every tag one token."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from zerosearch.hf import ensure_tag_tokens
from zerosearch.rollout.protocol import TAGS, TagIds, policy_prompt


def _byte_bpe() -> PreTrainedTokenizerFast:
    """A small byte-level BPE (Qwen2-style) trained here on protocol text: tags come out as several tokens."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator([policy_prompt("what is the capital of france ?")] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def test_tags_become_single_tokens_and_embeddings_grow():
    tok = _byte_bpe()
    assert any(len(tok.encode(t, add_special_tokens=False)) > 1 for t in TAGS)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(cfg)
    before = model.get_input_embeddings().weight.detach().clone()

    added = ensure_tag_tokens(tok, model)

    assert set(added) == {t for t in TAGS}
    TagIds(tok)  # raises unless every tag is exactly one token
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok) == before.shape[0] + len(added)
    assert torch.equal(emb[: before.shape[0]], before)  # old rows untouched
    assert model.get_output_embeddings().weight.shape[0] == len(tok)
    text = "<think> x </think> <search> capital of france </search>"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert ensure_tag_tokens(tok, model) == []  # idempotent
