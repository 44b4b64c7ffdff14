/* Loading and launching of the generated kernels: one module per (kernel, device), loaded
 * lazily under a lock, dynamic shared memory configured per device, never exits. */
#include "aot_runtime.h"

#include <mutex>
#include <string>

#include "aot_cuda.h"
#include "aot_errors.h"

namespace {

std::mutex g_load_mutex;
CUcontext g_ctx[AOT_MAX_DEVICES] = {};
int g_smem_optin[AOT_MAX_DEVICES] = {};

/* The device's primary context (what PyTorch uses), retained once and cached. */
CUresult primary_context(const aot::CudaApi* api, int device, CUcontext* out) {
    CUcontext ctx = __atomic_load_n(&g_ctx[device], __ATOMIC_ACQUIRE);
    if (ctx == nullptr) {
        std::lock_guard<std::mutex> lock(g_load_mutex);
        ctx = g_ctx[device];
        if (ctx == nullptr) {
            CUdevice dev;
            CUresult st = api->DeviceGet(&dev, device);
            if (st != CUDA_SUCCESS) return st;
            st = api->DevicePrimaryCtxRetain(&ctx, dev);
            if (st != CUDA_SUCCESS) return st;
            st = api->DeviceGetAttribute(&g_smem_optin[device],
                                         CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
            if (st != CUDA_SUCCESS) return st;
            __atomic_store_n(&g_ctx[device], ctx, __ATOMIC_RELEASE);
        }
    }
    *out = ctx;
    return CUDA_SUCCESS;
}

/* Load k's module into the current context (device) once; publish the function handle. */
CUresult kernel_function(const aot::CudaApi* api, aot_kernel_t* k, int device, CUfunction* out) {
    void* fn = __atomic_load_n(&k->function[device], __ATOMIC_ACQUIRE);
    if (fn == nullptr) {
        std::lock_guard<std::mutex> lock(g_load_mutex);
        fn = k->function[device];
        if (fn == nullptr) {
            if (static_cast<int>(k->shared) > g_smem_optin[device]) {
                aot::set_error_detail(std::string(k->variant_name) + " needs " +
                                      std::to_string(k->shared) + " B of shared memory; device " +
                                      std::to_string(device) + " allows " +
                                      std::to_string(g_smem_optin[device]) + " B");
                return CUDA_ERROR_INVALID_VALUE;
            }
            CUmodule mod;
            CUresult st = api->ModuleLoadData(&mod, k->image);
            if (st != CUDA_SUCCESS) return st;
            CUfunction f;
            st = api->ModuleGetFunction(&f, mod, k->kernel_name);
            if (st != CUDA_SUCCESS) return st;
            if (k->shared > 48u * 1024u) {  // beyond the default 48 KB a kernel must opt in
                st = api->FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                           static_cast<int>(k->shared));
                if (st != CUDA_SUCCESS) return st;
            }
            k->module[device] = mod;
            fn = reinterpret_cast<void*>(f);
            __atomic_store_n(&k->function[device], fn, __ATOMIC_RELEASE);
        }
    }
    *out = reinterpret_cast<CUfunction>(fn);
    return CUDA_SUCCESS;
}

}  // namespace

extern "C" CUresult aot_launch(aot_kernel_t* k, int device, CUstream stream, unsigned gx,
                               unsigned gy, unsigned gz, void** params) {
    if (gx == 0 || gy == 0 || gz == 0) return CUDA_SUCCESS;  // empty grid: nothing to do
    if (device < 0 || device >= AOT_MAX_DEVICES) return CUDA_ERROR_INVALID_DEVICE;
    std::string why;
    const aot::CudaApi* api = aot::cuda_api(&why);
    if (api == nullptr) {
        aot::set_error_detail(why);
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    CUcontext ctx;
    CUresult st = primary_context(api, device, &ctx);
    if (st != CUDA_SUCCESS) return st;
    // Make the tensors' device current for this thread, restore the caller's context after.
    CUcontext current = nullptr;
    api->CtxGetCurrent(&current);
    const bool push = current != ctx;
    if (push && (st = api->CtxPushCurrent(ctx)) != CUDA_SUCCESS) return st;
    CUfunction f;
    st = kernel_function(api, k, device, &f);
    if (st == CUDA_SUCCESS) {
        st = api->LaunchKernel(f, gx, gy, gz, k->num_warps * 32u, 1, 1, k->shared, stream,
                               params, nullptr);
    }
    if (push) {
        CUcontext popped;
        api->CtxPopCurrent(&popped);
    }
    return st;
}
