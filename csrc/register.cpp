// Owns the `zerosearch` operator namespace and the Python module zerosearch._C.
//
// Pattern: this file holds the only TORCH_LIBRARY(zerosearch, ...) block. Every op lives in one
// file csrc/<op>.cpp that declares its schema with TORCH_LIBRARY_FRAGMENT(zerosearch, m) and binds
// its kernels with TORCH_LIBRARY_IMPL(zerosearch, <Backend>, m), so adding an op never edits this
// file. Importing zerosearch._C runs the static registrations and exposes torch.ops.zerosearch.*.
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(zerosearch, m) {
  // Schemas are declared next to their kernels (TORCH_LIBRARY_FRAGMENT in csrc/<op>.cpp).
  (void)m;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "zerosearch compiled ops; import to register torch.ops.zerosearch.*";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
