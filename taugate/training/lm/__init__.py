"""A small LLaMA-architecture language model whose FFN units take per-domain modes."""
