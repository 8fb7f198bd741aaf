// zerosearch::info_span_mask: schema, argument checks and backend registration.
#include "info_span_mask.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace zerosearch {
namespace ops {
namespace detail {

void check_info_span_mask_args(const at::Tensor& token_ids, const at::Tensor& open_ids,
                               const at::Tensor& close_ids) {
  TORCH_CHECK(token_ids.dim() == 1 || token_ids.dim() == 2,
              "info_span_mask: token_ids must be 1-D or 2-D [B, T], got ", token_ids.dim(), "-D");
  TORCH_CHECK(token_ids.scalar_type() == at::kInt || token_ids.scalar_type() == at::kLong,
              "info_span_mask: token_ids must be int32 or int64, got ", token_ids.scalar_type());
  for (const auto& pair : {std::make_pair("open_ids", &open_ids), std::make_pair("close_ids", &close_ids)}) {
    const at::Tensor& tag = *pair.second;
    TORCH_CHECK(tag.dim() == 1 && tag.numel() > 0, "info_span_mask: ", pair.first,
                " must be a non-empty 1-D tensor, got shape ", tag.sizes());
    TORCH_CHECK(at::isIntegralType(tag.scalar_type(), /*includeBool=*/false), "info_span_mask: ",
                pair.first, " must be an integer tensor, got ", tag.scalar_type());
    TORCH_CHECK(tag.device() == token_ids.device(), "info_span_mask: ", pair.first, " is on ",
                tag.device(), " but token_ids is on ", token_ids.device());
  }
}

namespace {

// Shape-only kernel so the op works under torch.compile / fake tensors.
at::Tensor info_span_mask_meta(const at::Tensor& token_ids, const at::Tensor& open_ids,
                               const at::Tensor& close_ids, int64_t /*pad_id*/) {
  check_info_span_mask_args(token_ids, open_ids, close_ids);
  return at::empty(token_ids.sizes(), token_ids.options().dtype(at::kBool));
}

}  // namespace

#ifdef WITH_CUDA
at::Tensor info_span_mask_cuda(const at::Tensor& token_ids, const at::Tensor& open_ids,
                               const at::Tensor& close_ids, int64_t pad_id) {
  check_info_span_mask_args(token_ids, open_ids, close_ids);
  TORCH_CHECK(token_ids.is_cuda(), "info_span_mask_cuda: token_ids must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(token_ids.device());
  const at::Tensor tokens = token_ids.contiguous();
  const at::Tensor open_tag = open_ids.to(at::kLong).contiguous();
  const at::Tensor close_tag = close_ids.to(at::kLong).contiguous();
  at::Tensor out = at::empty(tokens.sizes(), tokens.options().dtype(at::kBool));
  launch_info_span_mask_kernel(tokens, open_tag, close_tag, pad_id, out,
                               c10::cuda::getCurrentCUDAStream().stream());
  return out;
}
#endif
}  // namespace detail

at::Tensor info_span_mask(const at::Tensor& token_ids, const at::Tensor& open_ids,
                          const at::Tensor& close_ids, int64_t pad_id) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("zerosearch::info_span_mask", "")
                       .typed<decltype(info_span_mask)>();
  return op.call(token_ids, open_ids, close_ids, pad_id);
}

}  // namespace ops
}  // namespace zerosearch

TORCH_LIBRARY_FRAGMENT(zerosearch, m) {
  m.def(
      "info_span_mask(Tensor token_ids, Tensor open_ids, Tensor close_ids, int pad_id) -> Tensor");
}

TORCH_LIBRARY_IMPL(zerosearch, CPU, m) {
  m.impl("info_span_mask", &zerosearch::ops::detail::info_span_mask_cpu);
}

TORCH_LIBRARY_IMPL(zerosearch, Meta, m) {
  m.impl("info_span_mask", &zerosearch::ops::detail::info_span_mask_meta);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(zerosearch, CUDA, m) {
  m.impl("info_span_mask", &zerosearch::ops::detail::info_span_mask_cuda);
}
#endif
