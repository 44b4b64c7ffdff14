/* libcuda resolved at run time with dlopen: the extension imports on a machine without a
 * driver, and the first call there raises a clear error instead of failing at import. */
#pragma once
#include <cuda.h>

#include <string>

namespace aot {

struct CudaApi {
    decltype(&::cuInit) Init;
    decltype(&::cuGetErrorName) GetErrorName;
    decltype(&::cuGetErrorString) GetErrorString;
    decltype(&::cuDeviceGet) DeviceGet;
    decltype(&::cuDeviceGetCount) DeviceGetCount;
    decltype(&::cuDeviceGetAttribute) DeviceGetAttribute;
    decltype(&::cuDevicePrimaryCtxRetain) DevicePrimaryCtxRetain;
    decltype(&::cuDevicePrimaryCtxRelease) DevicePrimaryCtxRelease;
    decltype(&::cuCtxGetCurrent) CtxGetCurrent;
    decltype(&::cuCtxPushCurrent) CtxPushCurrent;
    decltype(&::cuCtxPopCurrent) CtxPopCurrent;
    decltype(&::cuModuleLoadData) ModuleLoadData;
    decltype(&::cuModuleUnload) ModuleUnload;
    decltype(&::cuModuleGetFunction) ModuleGetFunction;
    decltype(&::cuFuncSetAttribute) FuncSetAttribute;
    decltype(&::cuOccupancyMaxActiveBlocksPerMultiprocessor) OccupancyMaxActiveBlocksPerMultiprocessor;
    decltype(&::cuLaunchKernel) LaunchKernel;
};

/* The loaded driver API, or nullptr; on failure *why says what went wrong. Thread-safe. */
const CudaApi* cuda_api(std::string* why);

/* "CUDA_ERROR_X: description" for a status (works without a driver: falls back to the number). */
std::string cuda_error_text(CUresult status);

}  // namespace aot
