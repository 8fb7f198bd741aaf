// zerosearch::stop_match: schema, argument checks and backend registration.
#include "stop_match.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace zerosearch {
namespace ops {
namespace detail {

void check_stop_match_args(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                           const at::Tensor& stop_offsets) {
  TORCH_CHECK(tokens.dim() == 2, "stop_match: tokens must be 2-D [B, T], got ", tokens.dim(), "-D");
  TORCH_CHECK(tokens.scalar_type() == at::kInt || tokens.scalar_type() == at::kLong,
              "stop_match: tokens must be int32 or int64, got ", tokens.scalar_type());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == tokens.size(0),
              "stop_match: lengths must be 1-D with one entry per row, got shape ", lengths.sizes());
  TORCH_CHECK(stop_flat.dim() == 1, "stop_match: stop_flat must be 1-D, got shape ", stop_flat.sizes());
  TORCH_CHECK(stop_offsets.dim() == 1 && stop_offsets.numel() >= 1,
              "stop_match: stop_offsets must be 1-D with num_stops + 1 entries, got shape ", stop_offsets.sizes());
  for (const auto& pair : {std::make_pair("lengths", &lengths), std::make_pair("stop_flat", &stop_flat),
                           std::make_pair("stop_offsets", &stop_offsets)}) {
    const at::Tensor& t = *pair.second;
    TORCH_CHECK(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), "stop_match: ", pair.first,
                " must be an integer tensor, got ", t.scalar_type());
    TORCH_CHECK(t.device() == tokens.device(), "stop_match: ", pair.first, " is on ", t.device(),
                " but tokens is on ", tokens.device());
  }
}

namespace {

at::Tensor stop_match_meta(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                           const at::Tensor& stop_offsets) {
  check_stop_match_args(tokens, lengths, stop_flat, stop_offsets);
  return at::empty({tokens.size(0)}, tokens.options().dtype(at::kLong));
}

}  // namespace

#ifdef WITH_CUDA
at::Tensor stop_match_cuda(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                           const at::Tensor& stop_offsets) {
  check_stop_match_args(tokens, lengths, stop_flat, stop_offsets);
  TORCH_CHECK(tokens.is_cuda(), "stop_match_cuda: tokens must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(tokens.device());
  const at::Tensor tok = tokens.contiguous();
  const at::Tensor len = lengths.to(at::kLong).contiguous();
  const at::Tensor flat = stop_flat.to(at::kLong).contiguous();
  const at::Tensor off = stop_offsets.to(at::kLong).contiguous();
  at::Tensor out = at::empty({tok.size(0)}, tok.options().dtype(at::kLong));
  launch_stop_match_kernel(tok, len, flat, off, out, c10::cuda::getCurrentCUDAStream().stream());
  return out;
}
#endif
}  // namespace detail

at::Tensor stop_match(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                      const at::Tensor& stop_offsets) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("zerosearch::stop_match", "")
                       .typed<decltype(stop_match)>();
  return op.call(tokens, lengths, stop_flat, stop_offsets);
}

}  // namespace ops
}  // namespace zerosearch

TORCH_LIBRARY_FRAGMENT(zerosearch, m) {
  m.def("stop_match(Tensor tokens, Tensor lengths, Tensor stop_flat, Tensor stop_offsets) -> Tensor");
}

TORCH_LIBRARY_IMPL(zerosearch, CPU, m) {
  m.impl("stop_match", &zerosearch::ops::detail::stop_match_cpu);
}

TORCH_LIBRARY_IMPL(zerosearch, Meta, m) {
  m.impl("stop_match", &zerosearch::ops::detail::stop_match_meta);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(zerosearch, CUDA, m) {
  m.impl("stop_match", &zerosearch::ops::detail::stop_match_cuda);
}
#endif
