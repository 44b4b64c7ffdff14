/* Runtime interface between the generated launchers (build/gen/aot_kernels.cpp) and the
 * extension. Only types from Triton's bundled cuda.h are used; libcuda itself is resolved at
 * run time (see aot_cuda.cpp), so the extension links no CUDA library. */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <cuda.h>

#define AOT_MAX_DEVICES 64
#define AOT_NUM_INTS 10 /* Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG, HAS_BIAS, HAS_O (variants.toml [abi] i32_scalars) */

#ifdef __cplusplus
extern "C" {
#endif

/* The cubins of one (op, arch), embedded as one xz stream (build_tools/pack.py) and unpacked
 * once, on first use (aot_unpack). */
typedef struct aot_image {
    const char* name;            /* "<op>_sm<arch>" */
    const unsigned char* packed; /* xz stream */
    unsigned packed_bytes;
    unsigned raw_bytes;
    const unsigned char* volatile raw; /* the cubins, published once unpacked (never freed) */
} aot_image_t;

/* One compiled kernel; function/module handles are cached per device (context). */
typedef struct aot_kernel {
    aot_image_t* image;      /* the image holding its cubin ... */
    unsigned offset;         /* ... from this byte (its size: aot_variant_t.cubin_bytes) */
    const char* kernel_name; /* symbol inside the cubin */
    unsigned shared;            /* dynamic shared memory bytes */
    unsigned num_warps;
    const char* variant_name;
    void* volatile function[AOT_MAX_DEVICES]; /* CUfunction, published once loaded */
    void* module[AOT_MAX_DEVICES];            /* CUmodule */
    int blocks_per_sm[AOT_MAX_DEVICES]; /* programs one multiprocessor runs at once (the
                                           driver's occupancy), set before function is */
} aot_kernel_t;

/* The arguments of one call: raw pointers, strides and ints in the op's ABI order. */
typedef struct aot_call {
    int device;
    const uint64_t* ptrs;
    const int64_t* strides;
    const int32_t* ints; /* AOT_NUM_INTS entries: Z, H, T, M, D, HAS_TDO, Q_LEN, DIAG, HAS_BIAS, HAS_O */
    float scale;
} aot_call_t;

typedef CUresult (*aot_launch_fn)(CUstream, unsigned, unsigned, unsigned, const aot_call_t*);
typedef int (*aot_fast_fn)(const aot_call_t*);

typedef struct aot_op {
    const char* name;
    char grid;          /* 'T': axis 0 tiles query rows by BLOCK_M; 'M': keys by BLOCK_N */
    int n_ptrs;
    int n_strides;
    const char* ptr_names;     /* comma separated, ABI order */
    const char* stride_owners; /* comma separated: the pointer owning each (z, h, row) triple */
    aot_fast_fn fast_ok;   /* the call meets the fast flavour's conditions */
    aot_fast_fn ragged_ok; /* ... the ragged flavour's (strides and head dim % 8) */
} aot_op_t;

typedef struct aot_variant {
    int op;
    const char* dtype;
    int dtype_code; /* 0 fp16, 1 bf16, 2 fp32 (fp32-accurate), 3 fp32 with TF32 products */
    int head_dim;   /* bucket */
    int arch;       /* 90 = sm_90a, 80 = sm_80 */
    int flavor;     /* 0 general, 1 fast (aligned, D == bucket), 2 masked (reads Bias), 3 both,
                       4 ragged (aligned, D < bucket, strides and D % 8), 5 padding_fast */
    int max_len;    /* 0: any sequence length; else a tier that runs for max(T, M) <= max_len
                       in place of its untiered twin (same op, dtype, bucket, arch, flavour) */
    int tail_len;   /* a tier's reach past max_len: for max(T, M) <= tail_len it also runs
                       where the twin's last block of grid rows would be at most half full */
    int causal_len; /* a tier's reach for causal calls (the first query row sees fewer than
                       all M keys): it runs for them where max(T, M) per head (T before
                       grouped heads are folded) <= causal_len (0: none) */
    int grid_len;   /* a tier's reach for grids that leave waves idle: for max(T, M) <=
                       grid_len it also runs where the twin's grid would leave at least a
                       quarter of the slots of its waves idle (idle_grid; 0: none) */
    int narrow;     /* a tier with a narrow tail that runs only where it sweeps one: where the
                       call's inner loop (keys for a query-side op, query rows for a key-side
                       one) ends 1..narrow rows past a whole block of its own (block_n, or
                       block_m for a key-side op); 0: no such condition */
    int block_m, block_n, num_warps, num_stages;
    unsigned shared;
    unsigned cubin_bytes;
    const char* input_precision;
    aot_launch_fn launch;
    aot_kernel_t* kernel;
} aot_variant_t;

typedef struct aot_serve {
    int arch; /* compiled arch */
    int cc;   /* compute capability of devices that run its cubins */
} aot_serve_t;

extern aot_image_t aot_images[];
extern const int aot_num_images;
extern const aot_op_t aot_ops[];
extern const int aot_num_ops;
extern const aot_variant_t aot_variants[];
extern const int aot_num_variants;
extern const int aot_archs[];
extern const int aot_num_archs;
extern const aot_serve_t aot_serves[];
extern const int aot_num_serves;
extern const char* const aot_int_names[AOT_NUM_INTS];

/* Load (once per device, thread-safe) and launch. Never exits; returns the CUDA status.
 * An empty grid returns CUDA_SUCCESS without launching. */
CUresult aot_launch(aot_kernel_t* k, int device, CUstream stream, unsigned gx, unsigned gy,
                    unsigned gz, void** params);

/* Load k's module on `device` (once, thread-safe) without launching anything. */
CUresult aot_load(aot_kernel_t* k, int device);

/* How many programs of k one multiprocessor of `device` runs at once (the driver's occupancy
 * for k's warps, registers and shared memory, read when k's module is loaded), loading it
 * first where it is not. */
CUresult aot_blocks_per_sm(aot_kernel_t* k, int device, int* blocks);

/* The unpacked bytes of `image` (unpacking them on the first call; thread-safe, takes the
 * Python GIL to do so: never call it holding a lock another GIL holder may wait for). On
 * failure returns CUDA_ERROR_INVALID_IMAGE with the reason in the error detail. Implemented
 * in aot_images.cpp. */
CUresult aot_unpack(aot_image_t* image, const unsigned char** raw);

#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
namespace aot {

struct RuntimeCounters {
    long long modules_loaded, modules_unloaded, contexts_retained, contexts_released;
};
RuntimeCounters runtime_counters();

/* Test hook: load `proto`'s image on `device` so that the load fails after cuModuleLoadData
 * succeeded (mode 0: unknown function name; 1: impossible shared-memory attribute), through
 * the same code path as real loads. Returns the failing status. */
CUresult test_failing_load(int device, const aot_kernel_t* proto, int mode);

}  // namespace aot
#endif
