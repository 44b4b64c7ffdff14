#include "aot_cuda.h"

#include <dlfcn.h>

#include <mutex>

namespace aot {
namespace {

std::once_flag g_once;
CudaApi g_api;
const CudaApi* g_ok = nullptr;
std::string g_why;

#define AOT_STR_(x) #x
#define AOT_STR(x) AOT_STR_(x) /* expands cuda.h's versioned names, e.g. cuCtxPushCurrent_v2 */

void load() {
    void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        const char* err = dlerror();
        g_why = std::string("could not load the CUDA driver library libcuda.so.1 (") +
                (err ? err : "unknown error") +
                "); aot_sdpa kernels need an NVIDIA GPU with its driver installed";
        return;
    }
    bool ok = true;
#define AOT_LOAD(field, sym)                                                   \
    do {                                                                       \
        g_api.field = reinterpret_cast<decltype(g_api.field)>(dlsym(lib, AOT_STR(sym))); \
        if (g_api.field == nullptr) {                                          \
            g_why += std::string(g_why.empty() ? "" : ", ") + AOT_STR(sym);   \
            ok = false;                                                        \
        }                                                                      \
    } while (0)
    AOT_LOAD(Init, cuInit);
    AOT_LOAD(GetErrorName, cuGetErrorName);
    AOT_LOAD(GetErrorString, cuGetErrorString);
    AOT_LOAD(DeviceGet, cuDeviceGet);
    AOT_LOAD(DeviceGetCount, cuDeviceGetCount);
    AOT_LOAD(DeviceGetAttribute, cuDeviceGetAttribute);
    AOT_LOAD(DevicePrimaryCtxRetain, cuDevicePrimaryCtxRetain);
    AOT_LOAD(DevicePrimaryCtxRelease, cuDevicePrimaryCtxRelease);
    AOT_LOAD(CtxGetCurrent, cuCtxGetCurrent);
    AOT_LOAD(CtxPushCurrent, cuCtxPushCurrent);
    AOT_LOAD(CtxPopCurrent, cuCtxPopCurrent);
    AOT_LOAD(ModuleLoadData, cuModuleLoadData);
    AOT_LOAD(ModuleUnload, cuModuleUnload);
    AOT_LOAD(ModuleGetFunction, cuModuleGetFunction);
    AOT_LOAD(FuncSetAttribute, cuFuncSetAttribute);
    AOT_LOAD(OccupancyMaxActiveBlocksPerMultiprocessor, cuOccupancyMaxActiveBlocksPerMultiprocessor);
    AOT_LOAD(LaunchKernel, cuLaunchKernel);
#undef AOT_LOAD
    if (!ok) {
        g_why = "libcuda.so.1 lacks required symbols: " + g_why;
        return;
    }
    CUresult st = g_api.Init(0);
    if (st != CUDA_SUCCESS) {
        const char* name = nullptr;
        g_api.GetErrorName(st, &name);
        g_why = std::string("cuInit failed: ") + (name ? name : "unknown CUDA error");
        return;
    }
    g_ok = &g_api;
}

}  // namespace

const CudaApi* cuda_api(std::string* why) {
    std::call_once(g_once, load);
    if (g_ok == nullptr && why != nullptr) *why = g_why;
    return g_ok;
}

std::string cuda_error_text(CUresult status) {
    const CudaApi* api = cuda_api(nullptr);
    const char* name = nullptr;
    const char* desc = nullptr;
    if (api != nullptr) {
        api->GetErrorName(status, &name);
        api->GetErrorString(status, &desc);
    }
    std::string out = name ? name : ("CUDA error " + std::to_string(static_cast<int>(status)));
    if (desc) out += std::string(": ") + desc;
    return out;
}

}  // namespace aot
