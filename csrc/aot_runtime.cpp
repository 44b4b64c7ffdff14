/* Loading and launching of the generated kernels: one module per (kernel, device), loaded
 * lazily under a lock, dynamic shared memory configured per device, never exits. Every CUDA
 * result is checked, and whatever a failing path acquired (a module, a context retain, a
 * pushed context) is released before the status is returned. */
#include "aot_runtime.h"

#include <atomic>
#include <mutex>
#include <string>

#include "aot_cuda.h"
#include "aot_errors.h"

namespace {

std::mutex g_load_mutex;
CUcontext g_ctx[AOT_MAX_DEVICES] = {};
int g_smem_optin[AOT_MAX_DEVICES] = {};

/* What the runtime holds: modules loaded minus unloaded is the number alive (tests read it). */
std::atomic<long long> g_modules_loaded{0}, g_modules_unloaded{0};
std::atomic<long long> g_ctx_retained{0}, g_ctx_released{0};

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
            ++g_ctx_retained;
            st = api->DeviceGetAttribute(&g_smem_optin[device],
                                         CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev);
            if (st != CUDA_SUCCESS) {
                if (api->DevicePrimaryCtxRelease(dev) == CUDA_SUCCESS) ++g_ctx_released;
                return st;
            }
            __atomic_store_n(&g_ctx[device], ctx, __ATOMIC_RELEASE);
        }
    }
    *out = ctx;
    return CUDA_SUCCESS;
}

/* Makes `ctx` current for this thread while alive; restores the caller's context after. */
class ContextScope {
public:
    ContextScope(const aot::CudaApi* api, CUcontext ctx) : api_(api) {
        CUcontext current = nullptr;
        status_ = api_->CtxGetCurrent(&current);
        if (status_ == CUDA_SUCCESS && current != ctx) {
            status_ = api_->CtxPushCurrent(ctx);
            pushed_ = status_ == CUDA_SUCCESS;
        }
    }
    CUresult status() const { return status_; }
    /* Pops what was pushed; returns `st`, or the pop's failure when `st` was a success. */
    CUresult finish(CUresult st) {
        if (pushed_) {
            pushed_ = false;
            CUcontext popped;
            CUresult pop = api_->CtxPopCurrent(&popped);
            if (st == CUDA_SUCCESS) st = pop;
        }
        return st;
    }
    ~ContextScope() { finish(CUDA_SUCCESS); }

private:
    const aot::CudaApi* api_;
    CUresult status_ = CUDA_SUCCESS;
    bool pushed_ = false;
};

/* Load `image` into the current context and get `name` from it, opting the function into
 * `shared` bytes of dynamic shared memory, and read how many of its `threads`-thread programs
 * one multiprocessor runs at once; on any failure the module is unloaded again. */
CUresult load_function(const aot::CudaApi* api, const unsigned char* image, const char* name,
                       unsigned shared, unsigned threads, CUmodule* mod_out, CUfunction* fn_out,
                       int* blocks_out) {
    CUmodule mod;
    CUresult st = api->ModuleLoadData(&mod, image);
    if (st != CUDA_SUCCESS) return st;
    ++g_modules_loaded;
    CUfunction f;
    st = api->ModuleGetFunction(&f, mod, name);
    if (st == CUDA_SUCCESS && shared > 48u * 1024u) {  // beyond 48 KB a kernel must opt in
        st = api->FuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                   static_cast<int>(shared));
    }
    if (st == CUDA_SUCCESS)
        st = api->OccupancyMaxActiveBlocksPerMultiprocessor(blocks_out, f, static_cast<int>(threads),
                                                            shared);
    if (st != CUDA_SUCCESS) {
        if (api->ModuleUnload(mod) == CUDA_SUCCESS) ++g_modules_unloaded;
        return st;
    }
    *mod_out = mod;
    *fn_out = f;
    return CUDA_SUCCESS;
}

/* k's function on `device` (its context current), loading the module once. */
CUresult kernel_function(const aot::CudaApi* api, aot_kernel_t* k, int device, CUfunction* out) {
    void* fn = __atomic_load_n(&k->function[device], __ATOMIC_ACQUIRE);
    if (fn == nullptr) {
        const unsigned char* raw;  // unpacked before the lock: unpacking takes the GIL
        CUresult unpacked = aot_unpack(k->image, &raw);
        if (unpacked != CUDA_SUCCESS) return unpacked;
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
            CUfunction f;
            int blocks = 0;
            CUresult st = load_function(api, raw + k->offset, k->kernel_name, k->shared,
                                        k->num_warps * 32u, &mod, &f, &blocks);
            if (st != CUDA_SUCCESS) {
                aot::set_error_detail(std::string("loading ") + k->variant_name);
                return st;
            }
            k->module[device] = mod;
            k->blocks_per_sm[device] = blocks;  // published by function's release store
            fn = reinterpret_cast<void*>(f);
            __atomic_store_n(&k->function[device], fn, __ATOMIC_RELEASE);
        }
    }
    *out = reinterpret_cast<CUfunction>(fn);
    return CUDA_SUCCESS;
}

/* The driver API and the device's primary context, or the failing status. */
CUresult device_context(int device, const aot::CudaApi** api_out, CUcontext* ctx) {
    if (device < 0 || device >= AOT_MAX_DEVICES) return CUDA_ERROR_INVALID_DEVICE;
    std::string why;
    const aot::CudaApi* api = aot::cuda_api(&why);
    if (api == nullptr) {
        aot::set_error_detail(why);
        return CUDA_ERROR_NOT_INITIALIZED;
    }
    *api_out = api;
    return primary_context(api, device, ctx);
}

}  // namespace

extern "C" CUresult aot_launch(aot_kernel_t* k, int device, CUstream stream, unsigned gx,
                               unsigned gy, unsigned gz, void** params) {
    if (gx == 0 || gy == 0 || gz == 0) return CUDA_SUCCESS;  // empty grid: nothing to do
    const aot::CudaApi* api;
    CUcontext ctx;
    CUresult st = device_context(device, &api, &ctx);
    if (st != CUDA_SUCCESS) return st;
    ContextScope scope(api, ctx);  // the tensors' device current for this thread
    if (scope.status() != CUDA_SUCCESS) return scope.status();
    CUfunction f;
    st = kernel_function(api, k, device, &f);
    if (st == CUDA_SUCCESS) {
        st = api->LaunchKernel(f, gx, gy, gz, k->num_warps * 32u, 1, 1, k->shared, stream,
                               params, nullptr);
    }
    return scope.finish(st);
}

extern "C" CUresult aot_load(aot_kernel_t* k, int device) {
    if (device >= 0 && device < AOT_MAX_DEVICES &&
        __atomic_load_n(&k->function[device], __ATOMIC_ACQUIRE) != nullptr)
        return CUDA_SUCCESS;  // already loaded: no driver call
    const aot::CudaApi* api;
    CUcontext ctx;
    CUresult st = device_context(device, &api, &ctx);
    if (st != CUDA_SUCCESS) return st;
    ContextScope scope(api, ctx);
    if (scope.status() != CUDA_SUCCESS) return scope.status();
    CUfunction f;
    return scope.finish(kernel_function(api, k, device, &f));
}

extern "C" CUresult aot_blocks_per_sm(aot_kernel_t* k, int device, int* blocks) {
    const CUresult st = aot_load(k, device);  // acquires function: blocks_per_sm is visible
    *blocks = st == CUDA_SUCCESS ? k->blocks_per_sm[device] : 0;
    return st;
}

namespace aot {

RuntimeCounters runtime_counters() {
    return {g_modules_loaded.load(), g_modules_unloaded.load(), g_ctx_retained.load(),
            g_ctx_released.load()};
}

CUresult test_failing_load(int device, const aot_kernel_t* proto, int mode) {
    const CudaApi* api;
    CUcontext ctx;
    CUresult st = device_context(device, &api, &ctx);
    if (st != CUDA_SUCCESS) return st;
    ContextScope scope(api, ctx);
    if (scope.status() != CUDA_SUCCESS) return scope.status();
    // mode 0: a function name the cubin lacks; 1: more dynamic shared memory than any device
    const char* name = mode == 0 ? "aot_sdpa_no_such_kernel" : proto->kernel_name;
    const unsigned shared = mode == 0 ? proto->shared : (1u << 30);
    const unsigned char* raw;
    st = aot_unpack(proto->image, &raw);
    if (st != CUDA_SUCCESS) return scope.finish(st);
    CUmodule mod;
    CUfunction f;
    int blocks;
    st = load_function(api, raw + proto->offset, name, shared, proto->num_warps * 32u, &mod, &f,
                       &blocks);
    if (st == CUDA_SUCCESS) {  // not expected; never keep what a test loaded
        if (api->ModuleUnload(mod) == CUDA_SUCCESS) ++g_modules_unloaded;
        st = CUDA_ERROR_UNKNOWN;
        set_error_detail("the injected failure did not fail");
    }
    return scope.finish(st);
}

}  // namespace aot
