// CPU kernel of zerosearch::stop_match: rows are independent and split over ATen's thread pool; each
// row is scanned left to right and stops at the first end position where a stop sequence matches.
#include "stop_match.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace zerosearch {
namespace ops {
namespace detail {

at::Tensor stop_match_cpu(const at::Tensor& tokens, const at::Tensor& lengths, const at::Tensor& stop_flat,
                          const at::Tensor& stop_offsets) {
  check_stop_match_args(tokens, lengths, stop_flat, stop_offsets);
  TORCH_CHECK(tokens.device().is_cpu(), "stop_match_cpu: tokens must be on CPU");
  const at::Tensor tok = tokens.contiguous();
  const at::Tensor len = lengths.to(at::kLong).contiguous();
  const at::Tensor flat = stop_flat.to(at::kLong).contiguous();
  const at::Tensor off = stop_offsets.to(at::kLong).contiguous();
  const int64_t rows = tok.size(0);
  const int64_t n = tok.size(1);
  at::Tensor out = at::empty({rows}, tok.options().dtype(at::kLong));
  if (rows == 0) return out;
  const int64_t num_stops = off.numel() - 1;
  const int64_t* len_p = len.data_ptr<int64_t>();
  const int64_t* flat_p = flat.data_ptr<int64_t>();
  const int64_t* off_p = off.data_ptr<int64_t>();
  int64_t* out_p = out.data_ptr<int64_t>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(n, 1));
  AT_DISPATCH_INDEX_TYPES(tok.scalar_type(), "stop_match_cpu", [&] {
    const index_t* base = tok.data_ptr<index_t>();
    at::parallel_for(0, rows, grain, [&](int64_t first, int64_t last) {
      for (int64_t b = first; b < last; ++b) {
        const index_t* row = base + b * n;
        const int64_t limit = std::min<int64_t>(std::max<int64_t>(len_p[b], 0), n);
        int64_t found = -1;
        for (int64_t e = 1; e <= limit && found < 0; ++e) {
          if (any_stop_ends_at(row, e, flat_p, off_p, num_stops)) found = e;
        }
        out_p[b] = found;
      }
    });
  });
  return out;
}

}  // namespace detail
}  // namespace ops
}  // namespace zerosearch
