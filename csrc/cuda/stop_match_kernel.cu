// CUDA kernel of zerosearch::stop_match: one thread block per row; threads test end positions in
// parallel and the smallest matching end is kept with a shared-memory atomicMin.
#include "stop_match.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

namespace zerosearch {
namespace ops {
namespace detail {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    stop_match_kernel(const T* __restrict__ tokens, int64_t n, const int64_t* __restrict__ lengths,
                      const int64_t* __restrict__ flat, const int64_t* __restrict__ offsets, int64_t num_stops,
                      int64_t* __restrict__ out) {
  __shared__ int best;
  if (threadIdx.x == 0) best = INT_MAX;
  __syncthreads();
  const int64_t b = blockIdx.x;
  const T* row = tokens + b * n;
  int64_t limit = lengths[b];
  limit = limit < 0 ? 0 : (limit > n ? n : limit);
  // Positions are visited in increasing order per thread, so a thread can stop at its first hit and
  // also once another thread already found an earlier end.
  for (int64_t e = 1 + threadIdx.x; e <= limit; e += blockDim.x) {
    if (e >= static_cast<int64_t>(*(volatile int*)&best)) break;
    if (any_stop_ends_at(row, e, flat, offsets, num_stops)) {
      atomicMin(&best, static_cast<int>(e));
      break;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) out[b] = best == INT_MAX ? -1 : static_cast<int64_t>(best);
}

}  // namespace

void launch_stop_match_kernel(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                              const at::Tensor& stop_offsets, at::Tensor& out, void* stream) {
  const int64_t rows = tokens.size(0);
  if (rows == 0) return;
  const int64_t n = tokens.size(1);
  TORCH_CHECK(rows <= INT32_MAX && n < INT32_MAX, "stop_match_cuda: tokens too large ", tokens.sizes());
  AT_DISPATCH_INDEX_TYPES(tokens.scalar_type(), "stop_match_cuda", [&] {
    stop_match_kernel<index_t><<<static_cast<unsigned int>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        tokens.data_ptr<index_t>(), n, lengths.data_ptr<int64_t>(), stop_flat.data_ptr<int64_t>(),
        stop_offsets.data_ptr<int64_t>(), stop_offsets.numel() - 1, out.data_ptr<int64_t>());
  });
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "stop_match_cuda: kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace detail
}  // namespace ops
}  // namespace zerosearch
