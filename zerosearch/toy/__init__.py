"""The embedded toy world: invented knowledge base, word-level tokenizer and tiny Qwen2 models."""
