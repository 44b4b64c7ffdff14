#pragma once
/* The forward's host fast path (aot_fastpath.cpp) and what it needs from the dispatcher. */
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace aot {

/* The dispatcher's launch of `op` on raw arguments in its ABI order (aot_sdpa_ext.cpp). */
void launch_raw(int op, int dtype, int device, uintptr_t stream, const uint64_t* ptrs, int n_ptrs,
                const int64_t* strides, int n_strides, const int32_t* ints, double scale);

/* "a,b,c" -> {"a", "b", "c"}: the generated op table's name lists (aot_sdpa_ext.cpp). */
std::vector<std::string> split_commas(const char* s);

/* Adds _fwd_fast to the module; its launch errors raise these (aot_sdpa.CudaError and
 * NoKernelError, as pybind11 registered them). */
void add_fast_path(pybind11::module_& m, PyObject* cuda_error, PyObject* no_kernel_error);

}  // namespace aot
