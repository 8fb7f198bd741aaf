// info_span_mask: shared declarations and the per-token state machine used by every backend.
//
// Semantics (one row, left to right): outside a span, a complete match of the open tag starts a
// span; inside a span, a complete match of the close tag ends it. Both tags are marked, so is every
// token in between. A close tag outside a span and an open tag inside a span are ordinary tokens.
// An unclosed span runs to the end of the row. Tokens equal to pad_id (when pad_id >= 0) are never
// marked; for matching they are ordinary tokens.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace zerosearch {
namespace ops {

at::Tensor info_span_mask(const at::Tensor& token_ids, const at::Tensor& open_ids,
                          const at::Tensor& close_ids, int64_t pad_id);

namespace detail {

// Checks shared by all backends; returns nothing, throws c10::Error naming the bad argument.
void check_info_span_mask_args(const at::Tensor& token_ids, const at::Tensor& open_ids,
                               const at::Tensor& close_ids);

at::Tensor info_span_mask_cpu(const at::Tensor& token_ids, const at::Tensor& open_ids,
                              const at::Tensor& close_ids, int64_t pad_id);
#ifdef WITH_CUDA
at::Tensor info_span_mask_cuda(const at::Tensor& token_ids, const at::Tensor& open_ids,
                               const at::Tensor& close_ids, int64_t pad_id);
#endif

// Launches the CUDA kernel (csrc/cuda/info_span_mask_kernel.cu) on `stream` (a cudaStream_t).
// Inputs are already checked and contiguous on the current device: tokens int32/int64 [rows, n],
// tags int64, out bool like tokens. Split from info_span_mask_cuda so that the .cu file needs only
// ATen headers (CPU builds of torch ship no c10/cuda headers) and the device guard / current
// stream lookup stay in host C++.
void launch_info_span_mask_kernel(const at::Tensor& tokens, const at::Tensor& open_tag,
                                  const at::Tensor& close_tag, int64_t pad_id, at::Tensor& out,
                                  void* stream);

// Scan state of one row. Kept tiny and branch-only so the CPU loop and the CUDA tile scan share it:
// the caller says whether a full open/close tag starts at the current token, `step` says whether
// that token lies inside a span (before the pad rule) and advances the state.
struct SpanScan {
  bool inside = false;  // a span is open after the tokens consumed so far
  int64_t skip = 0;     // tokens of an already matched tag still to be consumed

  C10_HOST_DEVICE bool step(bool open_starts_here, bool close_starts_here, int64_t open_len,
                            int64_t close_len) {
    if (skip > 0) {  // rest of a matched tag: always part of a span
      --skip;
      return true;
    }
    if (!inside) {
      if (open_starts_here) {
        inside = true;
        skip = open_len - 1;
        return true;
      }
      return false;
    }
    if (close_starts_here) {
      inside = false;
      skip = close_len - 1;
    }
    return true;
  }

  // Only this tag can change the state at the next step (and none while a tag is being consumed).
  C10_HOST_DEVICE bool wants_open() const { return skip == 0 && !inside; }
  C10_HOST_DEVICE bool wants_close() const { return skip == 0 && inside; }
};

// True when tag[0..len) occurs in row at position t (row has n tokens).
template <typename T>
C10_HOST_DEVICE inline bool tag_starts_at(const T* row, int64_t n, int64_t t, const int64_t* tag,
                                          int64_t len) {
  if (t + len > n) return false;
  for (int64_t k = 0; k < len; ++k) {
    if (static_cast<int64_t>(row[t + k]) != tag[k]) return false;
  }
  return true;
}

}  // namespace detail
}  // namespace ops
}  // namespace zerosearch
