// CPU kernel of zerosearch::info_span_mask: rows are independent, so the batch is split over
// ATen's intra-op thread pool (OpenMP in the standard torch builds; honours torch.set_num_threads)
// and each row runs the sequential SpanScan state machine.
#include "info_span_mask.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>


namespace zerosearch {
namespace ops {
namespace detail {
namespace {

template <typename T>
void scan_rows(const T* tokens, int64_t rows, int64_t n, const int64_t* open_tag, int64_t open_len,
               const int64_t* close_tag, int64_t close_len, int64_t pad_id, bool* out) {
  // A thread gets at least ~64k tokens: below that, waking threads costs more than the scan.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(n, 1));
  at::parallel_for(0, rows, grain, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const T* row = tokens + b * n;
      bool* mark = out + b * n;
      SpanScan scan;
      for (int64_t t = 0; t < n; ++t) {
        const bool open_hit = scan.wants_open() && tag_starts_at(row, n, t, open_tag, open_len);
        const bool close_hit = scan.wants_close() && tag_starts_at(row, n, t, close_tag, close_len);
        const bool in_span = scan.step(open_hit, close_hit, open_len, close_len);
        mark[t] = in_span && (pad_id < 0 || static_cast<int64_t>(row[t]) != pad_id);
      }
    }
  });
}

}  // namespace

at::Tensor info_span_mask_cpu(const at::Tensor& token_ids, const at::Tensor& open_ids,
                              const at::Tensor& close_ids, int64_t pad_id) {
  check_info_span_mask_args(token_ids, open_ids, close_ids);
  TORCH_CHECK(token_ids.device().is_cpu(), "info_span_mask_cpu: token_ids must be on CPU");
  const at::Tensor tokens = token_ids.contiguous();
  const at::Tensor open_tag = open_ids.to(at::kLong).contiguous();
  const at::Tensor close_tag = close_ids.to(at::kLong).contiguous();
  at::Tensor out = at::empty(tokens.sizes(), tokens.options().dtype(at::kBool));
  if (tokens.numel() == 0) return out;
  const int64_t n = tokens.size(-1);
  const int64_t rows = tokens.numel() / n;
  AT_DISPATCH_INDEX_TYPES(tokens.scalar_type(), "info_span_mask_cpu", [&] {
    scan_rows<index_t>(tokens.data_ptr<index_t>(), rows, n, open_tag.data_ptr<int64_t>(),
                       open_tag.numel(), close_tag.data_ptr<int64_t>(), close_tag.numel(), pad_id,
                       out.data_ptr<bool>());
  });
  return out;
}

}  // namespace detail
}  // namespace ops
}  // namespace zerosearch
