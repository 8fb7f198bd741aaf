"""Public kernel API (DESIGN §4). Each function picks the fastest implementation for its inputs:
CUDA/Triton kernels on GPU, C++ or chunked PyTorch on CPU."""

from zerosearch.pg_loss import masked_pg_loss, token_logprobs
from zerosearch.span_mask import info_span_mask, policy_loss_mask

__all__ = ["info_span_mask", "policy_loss_mask", "token_logprobs", "masked_pg_loss"]
