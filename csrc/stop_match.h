// stop_match: shared declarations and the per-position test used by every backend.
//
// Semantics (one row): the answer is the smallest e in [1, length] such that some non-empty stop
// sequence s ends at e, i.e. tokens[e - len(s) .. e) == s; -1 when no stop sequence occurs in
// tokens[0 .. length). `e` is the number of tokens to keep (the stop sequence itself included), so a
// generated row is cut as row[:e]. Stop sequences are passed flattened: stop_flat holds them back to
// back, stop_offsets[s] .. stop_offsets[s + 1] delimits sequence s. Empty sequences never match.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cstdint>

namespace zerosearch {
namespace ops {

at::Tensor stop_match(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                      const at::Tensor& stop_offsets);

namespace detail {

void check_stop_match_args(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                           const at::Tensor& stop_offsets);

at::Tensor stop_match_cpu(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                          const at::Tensor& stop_offsets);
#ifdef WITH_CUDA
at::Tensor stop_match_cuda(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                           const at::Tensor& stop_offsets);
#endif

// Launches csrc/cuda/stop_match_kernel.cu on `stream` (a cudaStream_t). Inputs are checked, contiguous
// and on the current device: tokens int32/int64 [rows, n], lengths/stop_flat/stop_offsets int64,
// out int64 [rows]. Kept apart from host code so the .cu needs only ATen headers.
void launch_stop_match_kernel(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                              const at::Tensor& stop_offsets, at::Tensor& out, void* stream);

// Whether any stop sequence ends exactly at `end` (exclusive) of `row`.
template <typename T>
C10_HOST_DEVICE inline bool any_stop_ends_at(const T* row, int64_t end, const int64_t* flat, const int64_t* offsets,
                                             int64_t num_stops) {
  for (int64_t s = 0; s < num_stops; ++s) {
    const int64_t first = offsets[s];
    const int64_t len = offsets[s + 1] - first;
    if (len <= 0 || len > end) continue;
    bool same = true;
    for (int64_t i = 0; i < len && same; ++i) {
      same = static_cast<int64_t>(row[end - len + i]) == flat[first + i];
    }
    if (same) return true;
  }
  return false;
}

}  // namespace detail
}  // namespace ops
}  // namespace zerosearch
