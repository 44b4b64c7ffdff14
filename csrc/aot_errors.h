#pragma once
#include <stdexcept>
#include <string>

namespace aot {

/* A CUDA call failed; becomes aot_sdpa.CudaError (a RuntimeError) carrying the error name. */
struct CudaError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/* No compiled variant matches the call; becomes aot_sdpa.NoKernelError (a RuntimeError). */
struct NoKernelError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/* Extra context for the last failing status on this thread (cleared when taken). */
void set_error_detail(std::string detail);
std::string take_error_detail();

}  // namespace aot
