// CUDA kernel of zerosearch::info_span_mask: one thread block per row, the row walked in tiles.
//
// Per tile, all threads test in parallel whether the open / close tag starts at each token (the
// O(T * tag_len) part), thread 0 runs the cheap sequential SpanScan over those bits in shared
// memory (the state carries over tiles, including a tag that straddles a tile boundary), and all
// threads write the coalesced output with the pad rule applied.
#include "info_span_mask.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace zerosearch {
namespace ops {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 2048;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    info_span_mask_kernel(const T* __restrict__ tokens, int64_t n, const int64_t* __restrict__ open_tag,
                          int64_t open_len, const int64_t* __restrict__ close_tag, int64_t close_len,
                          int64_t pad_id, bool* __restrict__ out) {
  __shared__ uint8_t open_hit[kTile];
  __shared__ uint8_t close_hit[kTile];
  __shared__ uint8_t in_span[kTile];

  const T* row = tokens + static_cast<int64_t>(blockIdx.x) * n;
  bool* mark = out + static_cast<int64_t>(blockIdx.x) * n;
  SpanScan scan;  // used by thread 0 only; lives across tiles

  for (int64_t base = 0; base < n; base += kTile) {
    const int len = static_cast<int>(n - base < kTile ? n - base : kTile);
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      open_hit[i] = tag_starts_at(row, n, base + i, open_tag, open_len);
      close_hit[i] = tag_starts_at(row, n, base + i, close_tag, close_len);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int i = 0; i < len; ++i) {
        in_span[i] = scan.step(open_hit[i], close_hit[i], open_len, close_len);
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
      const int64_t tok = static_cast<int64_t>(row[base + i]);
      mark[base + i] = in_span[i] && (pad_id < 0 || tok != pad_id);
    }
    __syncthreads();  // the next tile overwrites the shared buffers
  }
}

}  // namespace

void launch_info_span_mask_kernel(const at::Tensor& tokens, const at::Tensor& open_tag,
                                  const at::Tensor& close_tag, int64_t pad_id, at::Tensor& out,
                                  void* stream) {
  if (tokens.numel() == 0) return;
  const int64_t n = tokens.size(-1);
  const int64_t rows = tokens.numel() / n;
  TORCH_CHECK(rows <= INT32_MAX, "info_span_mask_cuda: too many rows (", rows, ")");
  AT_DISPATCH_INDEX_TYPES(tokens.scalar_type(), "info_span_mask_cuda", [&] {
    info_span_mask_kernel<index_t>
        <<<static_cast<unsigned int>(rows), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
            tokens.data_ptr<index_t>(), n, open_tag.data_ptr<int64_t>(), open_tag.numel(),
            close_tag.data_ptr<int64_t>(), close_tag.numel(), pad_id, out.data_ptr<bool>());
  });
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "info_span_mask_cuda: kernel launch failed: ",
              cudaGetErrorString(err));
}

}  // namespace detail
}  // namespace ops
}  // namespace zerosearch
