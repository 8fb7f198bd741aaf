"""Public op API. Each op picks the fastest implementation for its inputs: Triton or CUDA kernels on GPU,
C++ (``zerosearch._C``) or chunked PyTorch on CPU, with a plain PyTorch reference beside each for tests."""

from zerosearch.ops.info_span_mask import info_span_mask, policy_loss_mask
from zerosearch.ops.masked_pg_loss import masked_pg_loss
from zerosearch.ops.stop_match import stop_match
from zerosearch.ops.token_logprobs import token_logprobs

__all__ = ["info_span_mask", "masked_pg_loss", "policy_loss_mask", "stop_match", "token_logprobs"]
