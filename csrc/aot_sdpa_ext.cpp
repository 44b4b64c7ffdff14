/* aot_sdpa._C: dispatch from (op, dtype, head dim, device arch, alignment) to a compiled
 * launcher. Takes raw pointers, strides, sizes and a stream handle: no libtorch, no CUDA
 * runtime, so one build serves any PyTorch. */
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <Python.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "aot_cuda.h"
#include "aot_errors.h"
#include "aot_fastpath.h"
#include "aot_runtime.h"

namespace py = pybind11;

namespace aot {

namespace {
thread_local std::string t_detail;
std::mutex g_arch_mutex;
int g_arch[AOT_MAX_DEVICES] = {};  // compute capability * 10, 0 = unknown
int g_sms[AOT_MAX_DEVICES] = {};   // streaming multiprocessors, 0 = unknown
/* dtype codes: 0 fp16, 1 bf16, 2 fp32 (fp32-accurate products), 3 fp32 with TF32 products
 * allowed (an op without a TF32 variant runs its fp32 one). */
constexpr int kNumDtypes = 4;
constexpr int kFp32 = 2, kTf32 = 3;
const char* const kDtypeNames[kNumDtypes] = {"float16", "bfloat16", "float32", "float32"};
constexpr int kMaxPtrs = 32, kMaxStrides = 96;
}  // namespace

void set_error_detail(std::string detail) { t_detail = std::move(detail); }
std::string take_error_detail() {
    std::string d;
    d.swap(t_detail);
    return d;
}

[[noreturn]] void throw_cuda(CUresult st, const std::string& what) {
    std::string msg = "aot_sdpa: " + what + " failed with " + cuda_error_text(st);
    std::string detail = take_error_detail();
    if (!detail.empty()) msg += " (" + detail + ")";
    throw CudaError(msg);
}

/* Compute capability of a device as e.g. 90 (cached with its multiprocessor count,
 * device_facts; needs the driver). */
int device_arch(int device) {
    if (device < 0 || device >= AOT_MAX_DEVICES)
        throw std::invalid_argument("aot_sdpa: device index out of range");
    int arch = __atomic_load_n(&g_arch[device], __ATOMIC_ACQUIRE);
    if (arch != 0) return arch;
    std::string why;
    const CudaApi* api = cuda_api(&why);
    if (api == nullptr) {
        set_error_detail(why);
        throw_cuda(CUDA_ERROR_NOT_INITIALIZED, "loading the CUDA driver");
    }
    CUdevice dev;
    CUresult st = api->DeviceGet(&dev, device);
    if (st != CUDA_SUCCESS) throw_cuda(st, "cuDeviceGet(" + std::to_string(device) + ")");
    int major = 0, minor = 0;
    st = api->DeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev);
    if (st == CUDA_SUCCESS)
        st = api->DeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev);
    if (st != CUDA_SUCCESS) throw_cuda(st, "cuDeviceGetAttribute");
    int sms = 0;
    st = api->DeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev);
    if (st != CUDA_SUCCESS) throw_cuda(st, "cuDeviceGetAttribute(multiprocessors)");
    arch = major * 10 + minor;
    std::lock_guard<std::mutex> lock(g_arch_mutex);
    // the count first: arch's release store publishes it to whoever reads arch as nonzero
    __atomic_store_n(&g_sms[device], sms, __ATOMIC_RELAXED);
    __atomic_store_n(&g_arch[device], arch, __ATOMIC_RELEASE);
    return arch;
}

/* A device's compute capability (device_arch) and number of streaming multiprocessors, read
 * with it (needs the driver): the idle-grid rule of tier_for compares a grid's programs with
 * the count times a variant's occupancy. */
struct DeviceFacts {
    int arch;
    int sms;
};

DeviceFacts device_facts(int device) {
    const int arch = device_arch(device);  // the index checked; the count cached (acquire)
    return {arch, __atomic_load_n(&g_sms[device], __ATOMIC_RELAXED)};
}

/* "sm_90, sm_80": plain string appends. A std::ostringstream here took the H200 test process
 * down (SIGSEGV in the first NoKernelError naming the archs, under torch 2.11 / Python 3.12;
 * fine on the CPU machine); with appends the same test passes there. */
std::string wheel_archs() {
    std::string s;
    for (int i = 0; i < aot_num_archs; ++i) s += (i ? ", sm_" : "sm_") + std::to_string(aot_archs[i]);
    return s;
}

/* The compiled arch whose cubins run on a device of compute capability `cc` (variants.toml
 * [serves]; the build checked each cubin's shared memory against every cc it serves), or 0. */
int pick_arch(int cc) {
    for (int i = 0; i < aot_num_serves; ++i)
        if (aot_serves[i].cc == cc) return aot_serves[i].arch;
    return 0;
}

std::vector<int> served_by(int arch) {
    std::vector<int> out;
    for (int i = 0; i < aot_num_serves; ++i)
        if (aot_serves[i].arch == arch) out.push_back(aot_serves[i].cc);
    return out;
}

constexpr int64_t kLongRows = INT32_MAX;  // test hooks' default max(T, M): no tier
constexpr int64_t kLargeGrid = INT32_MAX;  // test hooks' default grid heads: no idle grid

/* Benchmark hook (_C._tier_rows): when nonzero, every launch picks its sequence-length tier
 * for this max(T, M) instead of the call's own (kLongRows: the untiered variants), so one
 * process can time a tier against its untiered twin on the same call (benchmarks/ab_tiers.py).
 * 0, the default, is off. */
std::atomic<int64_t> g_tier_rows{0};

struct Choice {
    const aot_variant_t* run;       // the variant to launch
    const aot_variant_t* sibling;   // the other flavour of the same bucket (or null)
    const aot_variant_t* sibling2 = nullptr;  // with a mask, the third one (or null)
};

/* For each (op, dtype code, compiled arch): its variants, built once. Selection then scans a
 * handful of entries instead of the whole table on every call. */
const std::vector<const aot_variant_t*>& variants_of(int op, int dtype, int arch) {
    static std::vector<std::vector<const aot_variant_t*>> index;
    static std::once_flag once;
    std::call_once(once, [] {
        index.resize(static_cast<size_t>(aot_num_ops) * kNumDtypes * aot_num_archs);
        for (int i = 0; i < aot_num_variants; ++i) {
            const aot_variant_t& v = aot_variants[i];
            for (int a = 0; a < aot_num_archs; ++a)
                if (aot_archs[a] == v.arch)
                    index[(static_cast<size_t>(v.op) * kNumDtypes + v.dtype_code) * aot_num_archs + a]
                        .push_back(&v);
        }
    });
    static const std::vector<const aot_variant_t*> none;
    for (int a = 0; a < aot_num_archs; ++a)
        if (aot_archs[a] == arch)
            return index[(static_cast<size_t>(op) * kNumDtypes + dtype) * aot_num_archs + a];
    return none;
}

enum Flavor { kGeneral = 0, kFast = 1, kMasked = 2, kMaskedFast = 3, kRagged = 4,
              kPaddingFast = 5 };  // aot_variant_t.flavor
const char* const kFlavorNames[] = {"general", "fast", "masked", "masked_fast", "ragged",
                                    "padding_fast"};

/* The smallest bucket >= head_dim of `flavor` among `cands`' untiered variants (null: none). */
const aot_variant_t* smallest_bucket(const std::vector<const aot_variant_t*>& cands, int flavor,
                                     int head_dim) {
    const aot_variant_t* best = nullptr;
    for (const aot_variant_t* v : cands)
        if (v->flavor == flavor && v->max_len == 0 && v->head_dim >= head_dim &&
            (best == nullptr || v->head_dim < best->head_dim))
            best = v;
    return best;
}

/* The untiered variant of `flavor` in bucket `bucket` among `cands` (null: none). */
const aot_variant_t* untiered_of(const std::vector<const aot_variant_t*>& cands, int flavor,
                                 int bucket) {
    for (const aot_variant_t* v : cands)
        if (v->flavor == flavor && v->head_dim == bucket && v->max_len == 0) return v;
    return nullptr;
}

/* Whether a and b are tiers of one family: the same op, dtype, bucket, arch and flavour. */
bool same_family(const aot_variant_t* a, const aot_variant_t* b) {
    return a->op == b->op && a->dtype_code == b->dtype_code && a->head_dim == b->head_dim &&
           a->arch == b->arch && a->flavor == b->flavor;
}

/* For each variant, the other tiers of its family (empty for a family of one), built once:
 * a call loads them with the one it runs, so that a later call of another sequence length
 * (e.g. inside CUDA-graph capture, where loading a module is not allowed) finds its tier. */
const std::vector<const aot_variant_t*>& tier_siblings(const aot_variant_t* v) {
    static std::vector<std::vector<const aot_variant_t*>> family;
    static std::once_flag once;
    std::call_once(once, [] {
        family.resize(aot_num_variants);
        for (int i = 0; i < aot_num_variants; ++i) {
            const aot_variant_t* a = &aot_variants[i];
            for (const aot_variant_t* b : variants_of(a->op, a->dtype_code, a->arch))
                if (b != a && same_family(a, b)) family[i].push_back(b);
        }
    });
    return family[v - aot_variants];
}

/* Whether tier t may run for a call whose inner loop sweeps `inner` rows (M for a query-side
 * op, T for a key-side one): always, unless t has a narrow tail that runs only where it sweeps
 * one (kernels/variants.toml narrow_only): then where the loop ends 1..narrow rows past a
 * whole block of t's own (its block_n, or block_m for a key-side op). */
bool narrow_ok(const aot_variant_t* t, int64_t inner) {
    if (t->narrow == 0) return true;
    const int64_t block = aot_ops[t->op].grid == 'T' ? t->block_n : t->block_m;
    const int64_t tail = block > 0 ? inner % block : 0;
    return tail > 0 && tail <= t->narrow;
}

/* The grid a launch would fill: `bh` grid heads (Z * H as the kernel sees them) on a device
 * with `sms` multiprocessors, each running blocks_per_sm(v) programs of a variant v at once:
 * the driver's occupancy on `device`, or `blocks_per_sm` where that is > 0 (test hooks, no
 * driver). */
struct Grid {
    int64_t bh;
    int sms;
    int device;
    int blocks_per_sm;
};

/* The driver's occupancy of v on `device` (aot_blocks_per_sm: loading v if need be). */
int occupancy(const aot_variant_t* v, int device) {
    int blocks = 0;
    const CUresult st = aot_blocks_per_sm(v->kernel, device, &blocks);
    if (st != CUDA_SUCCESS) throw_cuda(st, std::string("loading '") + v->kernel->variant_name + "'");
    return blocks;
}

int blocks_per_sm(const aot_variant_t* v, const Grid& g) {
    if (g.blocks_per_sm > 0) return g.blocks_per_sm;
    const int blocks = occupancy(v, g.device);
    return blocks > 0 ? blocks : 1;
}

/* Whether `programs` programs leave at least a quarter of the slots of the waves they take
 * idle, `slots` programs running at once (kernels/variants.toml grid_len: the whole 16-bit
 * backward with the small tiles against the untiered ones, H200, by the untiered grid's
 * fill of its waves: 1.11-1.18x at 24-61%, 0.97x at 81%, 0.77-0.97x at 97%). */
bool idle_grid(int64_t programs, int64_t slots) {
    const int64_t waves = (programs + slots - 1) / slots;
    return 4 * programs <= 3 * waves * slots;
}

/* The variant of v's family for a call whose longest sequence is `rows` (max(T, M)), whose
 * grid tiles `extent` rows (T, or M for a key-side op) on grid `g` and whose inner loop sweeps
 * `inner` (narrow_ok): among the tiers narrow_ok allows, the one with the smallest max_len
 * (on a tie, the one with a narrow tail: the same tile that also sweeps the call's tail
 * narrowly) among those that cover rows (max_len >= rows or, for a causal call,
 * causal_len >= causal_rows: its max(T, M) per head, 0 for a call that is not causal;
 * kernels/variants.toml causal_len, the smaller tile wastes less on the diagonal blocks; or
 * grid_len >= rows where v's grid, bh * ceil(extent / block) programs, would leave at least a
 * quarter of the slots of its waves idle, idle_grid with blocks_per_sm(v) programs per
 * multiprocessor: kernels/variants.toml grid_len, the smaller tile's extra programs fill
 * them); else, where v's (the untiered twin's) last block of those rows would be at most half
 * full (0 < extent mod block <= block / 2; block: its BLOCK_M, or BLOCK_N for a key-side op),
 * the tier with the smallest tail_len >= rows (kernels/variants.toml tail_len: the smaller
 * tile wastes fewer rows); else v (untiered: any length). Null stays null. */
const aot_variant_t* tier_for(const aot_variant_t* v, int64_t rows, int64_t extent,
                              int64_t inner, int64_t causal_rows, const Grid& g) {
    if (v == nullptr) return v;
    const int block = aot_ops[v->op].grid == 'T' ? v->block_m : v->block_n;
    int idle = -1;  // idle_grid for v's grid, asked (of the driver) only where a tier needs it
    auto grid_covers = [&](const aot_variant_t* t) {
        if (t->grid_len < rows || block <= 0) return false;
        if (idle < 0) {
            const int64_t programs = g.bh * ((extent + block - 1) / block);
            idle = idle_grid(programs, static_cast<int64_t>(g.sms) * blocks_per_sm(v, g));
        }
        return idle == 1;
    };
    const aot_variant_t* best = v;
    for (const aot_variant_t* t : tier_siblings(v))
        if (narrow_ok(t, inner) &&
            (best->max_len == 0 || t->max_len < best->max_len ||
             (t->max_len == best->max_len && t->narrow > best->narrow)) &&
            (t->max_len >= rows || (causal_rows > 0 && t->causal_len >= causal_rows) ||
             grid_covers(t)))
            best = t;
    const int64_t tail = block > 0 ? extent % block : 0;
    if (best == v && tail > 0 && 2 * tail <= block)
        for (const aot_variant_t* t : tier_siblings(v))
            if (t->tail_len >= rows && narrow_ok(t, inner) &&
                (best == v || t->tail_len < best->tail_len))
                best = t;
    return best;
}

/* The variants of `op` for (dtype, head_dim) on `device`: the general one of the smallest
 * bucket >= head_dim, and the hinted one of it when it exists (with an attention mask,
 * `masked`: the masked and masked_fast ones): fast when head_dim == bucket, else ragged.
 * The hinted one runs when the call qualifies (fast_ok: aligned, strides % 16; ragged_ok:
 * aligned, strides and head_dim % 8; both: unit stats strides, int32 row offsets). A masked
 * call whose mask is key padding (`padding`: one bias row for every query row) runs
 * padding_fast where it is compiled and the call meets fast_ok (its dense-mask code compiled
 * out), and loads the bucket's other two masked flavours as siblings. All are loaded on
 * first use, so a later call with another alignment or mask layout (e.g. inside CUDA-graph
 * capture, where loading a module is not allowed) finds its flavour ready. dtype 3 (TF32
 * allowed) falls back to the fp32-accurate variants for ops (or, masked, flavours) compiled
 * without a TF32 one. Each of the three is then its sequence-length tier for `rows`
 * (max(T, M)), the grid's `extent` rows, the `inner` rows its loop sweeps, `causal_rows` and
 * its `grid` (tier_for), the untiered variant when none covers it. */
Choice select_for_cc(int op, int dtype, int head_dim, int cc, bool fast_ok, bool ragged_ok,
                     bool masked, int device, bool padding, int64_t rows, int64_t extent,
                     int64_t inner, int64_t causal_rows, const Grid& grid) {
    const int arch = pick_arch(cc);
    if (arch == 0) {
        throw NoKernelError("aot_sdpa: " +
                            (device >= 0 ? "device " + std::to_string(device) : "a device") +
                            " is sm_" + std::to_string(cc) + "; this build has kernels for " +
                            wheel_archs());
    }
    const int flavor = masked ? kMasked : kGeneral;
    const aot_variant_t* general = smallest_bucket(variants_of(op, dtype, arch), flavor, head_dim);
    if (general == nullptr && dtype == kTf32)
        general = smallest_bucket(variants_of(op, kFp32, arch), flavor, head_dim);
    if (general == nullptr) {
        throw NoKernelError(std::string("aot_sdpa: no '") + aot_ops[op].name + "' kernel" +
                            (masked ? " with a mask" : "") + " for " + kDtypeNames[dtype] +
                            " with head dim " + std::to_string(head_dim) + " on sm_" +
                            std::to_string(arch));
    }
    // the fast flavours need the head dim to fill its bucket exactly (no tail mask); ragged
    // (unmasked only) takes one below it
    const bool exact = general->head_dim == head_dim;
    const int hinted_flavor = masked ? kMaskedFast : (exact ? kFast : kRagged);
    const std::vector<const aot_variant_t*>& cands = variants_of(op, general->dtype_code, arch);
    const aot_variant_t* hinted = untiered_of(cands, hinted_flavor, general->head_dim);
    // (masked_fast, like fast, needs the head dim to fill the bucket: with a mask and a
    // smaller head dim it is only the sibling)
    const bool run_hinted = exact ? fast_ok : (!masked && ragged_ok);
    const aot_variant_t* padded =
        masked ? untiered_of(cands, kPaddingFast, general->head_dim) : nullptr;
    // each flavour's sequence-length tier for `rows` (kernels/variants.toml max_len)
    general = tier_for(general, rows, extent, inner, causal_rows, grid);
    hinted = tier_for(hinted, rows, extent, inner, causal_rows, grid);
    padded = tier_for(padded, rows, extent, inner, causal_rows, grid);
    if (padded != nullptr && padding && exact && fast_ok) return {padded, general, hinted};
    if (hinted != nullptr && run_hinted) return {hinted, general, padded};
    return {general, hinted, padded};
}

Choice select_variant(int op, int dtype, int head_dim, int device, bool fast_ok, bool ragged_ok,
                      bool masked, bool padding, int64_t rows, int64_t extent, int64_t inner,
                      int64_t causal_rows, int64_t bh) {
    const DeviceFacts facts = device_facts(device);
    return select_for_cc(op, dtype, head_dim, facts.arch, fast_ok, ragged_ok, masked, device,
                         padding, rows, extent, inner, causal_rows,
                         Grid{bh, facts.sms, device, 0});
}

std::vector<std::string> split_commas(const char* s) {
    std::vector<std::string> out;
    std::string cur;
    for (const char* p = s; *p; ++p) {
        if (*p == ',') {
            out.push_back(cur);
            cur.clear();
        } else {
            cur += *p;
        }
    }
    if (!cur.empty() || !out.empty()) out.push_back(cur);
    return out;
}

/* The index in an op's strides of its attention mask's row stride (stride_biasm: the third
 * of the triple owned by Bias), or -1 when the op takes no mask. */
int bias_row_stride_index(int op) {
    static const std::vector<int> index = [] {  // built once, thread-safe (a magic static)
        std::vector<int> all(aot_num_ops, -1);
        for (int i = 0; i < aot_num_ops; ++i) {
            const std::vector<std::string> owners = split_commas(aot_ops[i].stride_owners);
            for (size_t j = 0; j < owners.size(); ++j)
                if (owners[j] == "Bias") all[i] = 3 * static_cast<int>(j) + 2;
        }
        return all;
    }();
    return index[op];
}

/* A key-padding mask (or none): the mask's row stride is 0, one bias row for every query row. */
bool bias_is_key_padding(int op, const int64_t* strides) {
    const int i = bias_row_stride_index(op);
    return i < 0 || strides[i] == 0;
}

/* The index of the int `name` among the ints (variants.toml [abi] i32_scalars). */
int int_index(const char* name) {
    for (int i = 0; i < AOT_NUM_INTS; ++i)
        if (std::string(aot_int_names[i]) == name) return i;
    throw std::logic_error(std::string("aot_sdpa: the kernel ABI has no ") + name + " int");
}

int has_bias_index() {
    static const int index = int_index("HAS_BIAS");
    return index;
}

/* `rows` for tier choice, or the benchmark hook's value (`_tier_rows`) when it is set. */
int64_t hooked_rows(int64_t rows) {
    const int64_t forced = g_tier_rows.load(std::memory_order_relaxed);
    return forced != 0 ? forced : rows;
}

/* A launch's causal_rows for tier choice (ints: Z, H, T, M, ..., Q_LEN, DIAG): 0 unless it is
 * causal, its first query row seeing fewer than all M keys (row_limits(0) = DIAG < M - 1,
 * kernels/_common.py); else max(Q_LEN, M), the query positions per head (T before grouped
 * heads are folded into the rows) or the keys, or the benchmark hook's value when set. */
int64_t launch_causal_rows(const int32_t* ints) {
    static const int q_len = int_index("Q_LEN"), diag = int_index("DIAG");
    if (ints[diag] >= static_cast<int64_t>(ints[3]) - 1) return 0;
    return hooked_rows(ints[q_len] > ints[3] ? ints[q_len] : ints[3]);
}

void check_op(int op) {
    if (op < 0 || op >= aot_num_ops) throw std::invalid_argument("aot_sdpa: unknown op index");
}

void check_op_dtype(int op, int dtype) {
    check_op(op);
    if (dtype < 0 || dtype >= kNumDtypes) throw std::invalid_argument("aot_sdpa: unknown dtype code");
}

void load_or_throw(const aot_variant_t* v, int device) {
    CUresult st = aot_load(v->kernel, device);
    if (st != CUDA_SUCCESS) throw_cuda(st, std::string("loading '") + v->kernel->variant_name + "'");
}

/* The max(T, M) a launch's sequence-length tier is chosen by (ints: Z, H, T, M, ...), or the
 * benchmark hook's value when set. */
int64_t launch_rows(const int32_t* ints) { return hooked_rows(ints[2] > ints[3] ? ints[2] : ints[3]); }

/* Launch `op` on raw arguments in its ABI order (checked against the op's table). */
void launch_raw(int op, int dtype, int device, uintptr_t stream, const uint64_t* ptrs, int n_ptrs,
                const int64_t* strides, int n_strides, const int32_t* ints, double scale) {
    check_op_dtype(op, dtype);
    const aot_op_t& o = aot_ops[op];
    if (n_ptrs != o.n_ptrs || n_strides != o.n_strides)
        throw std::invalid_argument(std::string("aot_sdpa: op '") + o.name + "' takes " +
                                    std::to_string(o.n_ptrs) + " pointers and " +
                                    std::to_string(o.n_strides) + " strides");
    const int64_t bh = static_cast<int64_t>(ints[0]) * ints[1];
    const int64_t extent = o.grid == 'T' ? ints[2] : ints[3];
    const int64_t inner = o.grid == 'T' ? ints[3] : ints[2];  // what a program's loop sweeps
    if (bh == 0 || extent == 0) return;  // empty problem: no launch
    aot_call_t call{device, ptrs, strides, ints, static_cast<float>(scale)};
    const Choice c = select_variant(op, dtype, ints[4], device, o.fast_ok(&call) != 0,
                                    o.ragged_ok(&call) != 0, ints[has_bias_index()] != 0,
                                    bias_is_key_padding(op, strides), launch_rows(ints), extent,
                                    inner, launch_causal_rows(ints), bh);
    for (const aot_variant_t* v : {c.run, c.sibling, c.sibling2}) {
        if (v == nullptr) continue;
        if (v != c.run) load_or_throw(v, device);
        for (const aot_variant_t* t : tier_siblings(v)) load_or_throw(t, device);
    }
    const aot_variant_t* v = c.run;
    const int64_t block = o.grid == 'T' ? v->block_m : v->block_n;
    const int64_t gx = (extent + block - 1) / block;
    const int64_t gy = bh < 65535 ? bh : 65535;  // CUDA caps grid axes 1 and 2 at 65535
    const int64_t gz = (bh + gy - 1) / gy;
    if (gz > 65535 || gx > 0x7fffffff)
        throw std::invalid_argument("aot_sdpa: problem too large for one launch grid");
    CUresult st = v->launch(reinterpret_cast<CUstream>(stream), static_cast<unsigned>(gx),
                            static_cast<unsigned>(gy), static_cast<unsigned>(gz), &call);
    if (st != CUDA_SUCCESS) throw_cuda(st, std::string("launch of '") + o.name + "'");
}

void launch(int op, int dtype, int device, uintptr_t stream, const std::vector<uint64_t>& ptrs,
            const std::vector<int64_t>& strides, const std::array<int32_t, AOT_NUM_INTS>& ints,
            double scale) {
    launch_raw(op, dtype, device, stream, ptrs.data(), static_cast<int>(ptrs.size()),
               strides.data(), static_cast<int>(strides.size()), ints.data(), scale);
}

/* Per op: its pointer names as interned Python strings, and for each stride triple the index
 * of the pointer whose tensor supplies it (parsed once from the generated op table). */
struct OpNames {
    std::vector<py::object> ptr;
    std::vector<int> owner;
};

const OpNames& op_names(int op) {
    // built once under the GIL and never freed: Python objects must not be released after
    // the interpreter finalises
    static std::vector<OpNames>* names = nullptr;
    if (names == nullptr) {
        auto* all = new std::vector<OpNames>(aot_num_ops);
        for (int i = 0; i < aot_num_ops; ++i) {
            const std::vector<std::string> ptrs = split_commas(aot_ops[i].ptr_names);
            for (const std::string& n : ptrs)
                (*all)[i].ptr.push_back(py::reinterpret_steal<py::object>(
                    PyUnicode_InternFromString(n.c_str())));
            for (const std::string& n : split_commas(aot_ops[i].stride_owners)) {
                int idx = -1;
                for (size_t j = 0; j < ptrs.size(); ++j)
                    if (ptrs[j] == n) idx = static_cast<int>(j);
                (*all)[i].owner.push_back(idx);
            }
        }
        names = all;
    }
    return (*names)[op];
}

int64_t as_int64(PyObject* o) {
    const long long x = PyLong_AsLongLong(o);
    if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
    return x;
}

/* The raw arguments of `op` with its pointers given by name: `tensors` maps each of the op's
 * pointer names (exactly those) to a tensor (its data_ptr() and the first three of its
 * stride()) or None (a null pointer with zero strides). Needs the GIL. */
struct Packed {
    uint64_t ptrs[kMaxPtrs];
    int64_t strides[kMaxStrides];
    int n_ptrs = 0, n_strides = 0;
};

void pack_named(int op, py::dict tensors, Packed* out) {
    check_op(op);
    const OpNames& names = op_names(op);
    const int n_ptrs = static_cast<int>(names.ptr.size());
    const int n_strides = 3 * static_cast<int>(names.owner.size());
    if (n_ptrs > kMaxPtrs || n_strides > kMaxStrides)
        throw std::invalid_argument("aot_sdpa: op has too many arguments");
    PyObject* objs[kMaxPtrs];
    bool ok = PyDict_Size(tensors.ptr()) == n_ptrs;
    for (int i = 0; ok && i < n_ptrs; ++i) {
        objs[i] = PyDict_GetItemWithError(tensors.ptr(), names.ptr[i].ptr());  // borrowed
        if (objs[i] == nullptr) {
            if (PyErr_Occurred()) throw py::error_already_set();
            ok = false;
        }
    }
    if (!ok)
        throw py::type_error(std::string("aot_sdpa internal error: op '") + aot_ops[op].name +
                             "' takes pointers " + aot_ops[op].ptr_names + ", got " +
                             py::str(py::list(tensors.attr("keys")())).cast<std::string>());
    static PyObject* s_data_ptr = PyUnicode_InternFromString("data_ptr");
    static PyObject* s_stride = PyUnicode_InternFromString("stride");
    for (int i = 0; i < n_ptrs; ++i) {
        if (objs[i] == Py_None) {
            out->ptrs[i] = 0;
            continue;
        }
        py::object p = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(objs[i], s_data_ptr));
        if (!p) throw py::error_already_set();
        out->ptrs[i] = static_cast<uint64_t>(as_int64(p.ptr()));
    }
    for (size_t j = 0; j < names.owner.size(); ++j) {
        PyObject* t = objs[names.owner[j]];
        int64_t* trip = out->strides + 3 * j;
        if (t == Py_None) {
            trip[0] = trip[1] = trip[2] = 0;
            continue;
        }
        py::object st = py::reinterpret_steal<py::object>(PyObject_CallMethodNoArgs(t, s_stride));
        if (!st) throw py::error_already_set();
        if (!PyTuple_Check(st.ptr()) || PyTuple_GET_SIZE(st.ptr()) < 3)
            throw py::type_error(std::string("aot_sdpa internal error: '") +
                                 py::str(names.ptr[names.owner[j]]).cast<std::string>() +
                                 "' needs at least 3 dims for its strides");
        for (int a = 0; a < 3; ++a) trip[a] = as_int64(PyTuple_GET_ITEM(st.ptr(), a));
    }
    out->n_ptrs = n_ptrs;
    out->n_strides = n_strides;
}

/* launch() with the pointers given by name (pack_named): reads the tensors under the GIL,
 * launches without it. */
void launch_named(int op, int dtype, int device, uintptr_t stream, py::dict tensors,
                  const std::array<int32_t, AOT_NUM_INTS>& ints, double scale) {
    Packed a;
    pack_named(op, tensors, &a);
    py::gil_scoped_release release;
    launch_raw(op, dtype, device, stream, a.ptrs, a.n_ptrs, a.strides, a.n_strides, ints.data(),
               scale);
}

/* Load every variant that can run on `device` (for CUDA-graph capture of any op); returns
 * how many variants that is (all of them now loaded there). */
int load_all(int device) {
    const int arch = pick_arch(device_arch(device));
    int n = 0;
    for (int i = 0; i < aot_num_variants; ++i) {
        if (aot_variants[i].arch != arch) continue;
        load_or_throw(&aot_variants[i], device);
        ++n;
    }
    return n;
}

py::list inventory() {
    py::list out;
    for (int i = 0; i < aot_num_variants; ++i) {
        const aot_variant_t& v = aot_variants[i];
        py::dict d;
        d["name"] = v.kernel->variant_name;
        d["op"] = aot_ops[v.op].name;
        d["dtype"] = kDtypeNames[v.dtype_code];
        d["head_dim"] = v.head_dim;
        d["arch"] = "sm_" + std::to_string(v.arch);
        d["flavor"] = kFlavorNames[v.flavor];
        d["max_len"] = v.max_len;  // 0: any sequence length
        d["tail_len"] = v.tail_len;  // 0: none; else also up to it where the twin's tail is short
        d["causal_len"] = v.causal_len;  // 0: none; else causal calls run it up to it
        d["grid_len"] = v.grid_len;  // 0: none; else also up to it where the twin's grid is small
        d["narrow"] = v.narrow;  // 0: none; else only where the inner loop's tail is that narrow
        d["block_m"] = v.block_m;
        d["block_n"] = v.block_n;
        d["num_warps"] = v.num_warps;
        d["num_stages"] = v.num_stages;
        d["shared_bytes"] = v.shared;
        d["cubin_bytes"] = v.cubin_bytes;
        d["image"] = v.kernel->image->name;
        d["image_offset"] = v.kernel->offset;
        d["input_precision"] = v.input_precision;
        d["serves"] = served_by(v.arch);
        out.append(d);
    }
    return out;
}

/* (run, sibling or None, second sibling or None) variant names of a choice, for the test
 * hooks. */
py::tuple choice_names(const Choice& c) {
    py::object sibling = py::none(), sibling2 = py::none();
    if (c.sibling != nullptr) sibling = py::str(c.sibling->kernel->variant_name);
    if (c.sibling2 != nullptr) sibling2 = py::str(c.sibling2->kernel->variant_name);
    return py::make_tuple(c.run->kernel->variant_name, sibling, sibling2);
}

py::list images() {
    py::list out;
    for (int i = 0; i < aot_num_images; ++i) {
        const aot_image_t& im = aot_images[i];
        py::dict d;
        d["name"] = im.name;
        d["packed_bytes"] = im.packed_bytes;
        d["raw_bytes"] = im.raw_bytes;
        d["unpacked"] = __atomic_load_n(&im.raw, __ATOMIC_ACQUIRE) != nullptr;
        out.append(d);
    }
    return out;
}

/* The unpacked bytes of the image called `name` (unpacking it if needed; no driver needed). */
py::bytes unpacked_image(const std::string& name) {
    for (int i = 0; i < aot_num_images; ++i) {
        if (name != aot_images[i].name) continue;
        const unsigned char* raw;
        CUresult st;
        {
            py::gil_scoped_release release;  // aot_unpack takes the GIL itself
            st = aot_unpack(&aot_images[i], &raw);
        }
        if (st != CUDA_SUCCESS) {
            std::string detail = take_error_detail();
            throw CudaError("aot_sdpa: " + detail);
        }
        return py::bytes(reinterpret_cast<const char*>(raw), aot_images[i].raw_bytes);
    }
    throw std::invalid_argument("aot_sdpa: no kernel image named '" + name + "'");
}

py::list ops() {
    py::list out;
    for (int i = 0; i < aot_num_ops; ++i) {
        py::dict d;
        d["name"] = aot_ops[i].name;
        d["grid"] = std::string(1, aot_ops[i].grid);
        d["pointers"] = aot_ops[i].ptr_names;
        d["stride_owners"] = aot_ops[i].stride_owners;
        d["n_strides"] = aot_ops[i].n_strides;
        out.append(d);
    }
    return out;
}

}  // namespace aot

PYBIND11_MODULE(_C, m) {
    m.doc() = "aot_sdpa native extension: AOT-compiled Triton kernels and their dispatcher";
    auto& cuda_error = py::register_exception<aot::CudaError>(m, "CudaError", PyExc_RuntimeError);
    auto& no_kernel =
        py::register_exception<aot::NoKernelError>(m, "NoKernelError", PyExc_RuntimeError);
    aot::add_fast_path(m, cuda_error.ptr(), no_kernel.ptr());
    m.def("launch", &aot::launch, py::arg("op"), py::arg("dtype"), py::arg("device"),
          py::arg("stream"), py::arg("ptrs"), py::arg("strides"), py::arg("ints"),
          py::arg("scale"), py::call_guard<py::gil_scoped_release>(),
          "Launch op on raw pointers (ABI order of ops()); raises CudaError/NoKernelError.");
    m.def("launch_named", &aot::launch_named, py::arg("op"), py::arg("dtype"), py::arg("device"),
          py::arg("stream"), py::arg("tensors"), py::arg("ints"), py::arg("scale"),
          "Launch op with its pointers given by name ({name: tensor or None}); reads each "
          "tensor's data_ptr() and stride()[:3]; raises CudaError/NoKernelError.");
    m.def("_pack_named", [](int op, py::dict tensors) {
        aot::Packed a;
        aot::pack_named(op, tensors, &a);
        return py::make_tuple(std::vector<uint64_t>(a.ptrs, a.ptrs + a.n_ptrs),
                              std::vector<int64_t>(a.strides, a.strides + a.n_strides));
    }, py::arg("op"), py::arg("tensors"),
          "Test hook: the (pointers, strides) launch_named would pass for these tensors.");
    m.def("_fast_ok", [](int op, py::dict tensors, const std::array<int32_t, AOT_NUM_INTS>& ints,
                         bool ragged) {
        aot::Packed a;
        aot::pack_named(op, tensors, &a);
        aot_call_t call{0, a.ptrs, a.strides, ints.data(), 1.0f};
        return (ragged ? aot_ops[op].ragged_ok(&call) : aot_ops[op].fast_ok(&call)) != 0;
    }, py::arg("op"), py::arg("tensors"), py::arg("ints"), py::arg("ragged") = false,
          "Test hook: whether these tensors meet the op's fast-flavour conditions (alignment, "
          "strides % 16, unit strides, int32 row offsets) or, ragged, the ragged flavour's "
          "(strides and head dim % 8); no driver needed.");
    m.def("_bias_is_key_padding", [](int op, py::dict tensors) {
        aot::Packed a;
        aot::pack_named(op, tensors, &a);
        return aot::bias_is_key_padding(op, a.strides);
    }, py::arg("op"), py::arg("tensors"),
          "Test hook: whether the call's mask is key padding or absent (its row stride 0), the "
          "dispatcher's condition for padding_fast; no driver needed.");
    m.def("inventory", &aot::inventory, "One dict per compiled variant.");
    m.def("ops", &aot::ops, "The ops' names, grid axis and pointer order.");
    m.def("images", &aot::images,
          "One dict per embedded kernel image (name, packed_bytes, raw_bytes, unpacked).");
    m.def("_unpacked_image", &aot::unpacked_image, py::arg("name"),
          "Test hook: the unpacked bytes of one kernel image (unpacks it; no driver needed).");
    m.def("archs", []() {
        std::vector<int> a(aot_archs, aot_archs + aot_num_archs);
        return a;
    });
    m.def("int_names", []() {
        std::vector<std::string> n(aot_int_names, aot_int_names + AOT_NUM_INTS);
        return n;
    }, "Names of the ints passed to launch, in order.");
    m.def("load_all", &aot::load_all, py::arg("device"), py::call_guard<py::gil_scoped_release>(),
          "Load every variant that runs on the device; returns how many.");
    m.def("_runtime_counters", []() {
        aot::RuntimeCounters c = aot::runtime_counters();
        py::dict d;
        d["modules_loaded"] = c.modules_loaded;
        d["modules_unloaded"] = c.modules_unloaded;
        d["contexts_retained"] = c.contexts_retained;
        d["contexts_released"] = c.contexts_released;
        return d;
    }, "Modules and contexts the runtime acquired and released (for leak tests).");
    m.def("_test_failing_load", [](int device, int mode) {
        if (aot_num_variants == 0) throw std::invalid_argument("aot_sdpa: no variants built");
        CUresult st;
        {
            py::gil_scoped_release release;
            st = aot::test_failing_load(device, aot_variants[0].kernel, mode);
        }
        aot::throw_cuda(st, "test load (injected failure)");
    }, py::arg("device"), py::arg("mode"),
          "Test hook: a module load that fails after cuModuleLoadData; always raises CudaError.");
    // rows (max(T, M)) defaults to a long sequence: the untiered variants
    // extent (the grid's rows) and inner (what a program's loop sweeps) default to rows: a call
    // with T = M; causal_rows: 0 (not causal) or a causal call's max(T, M) per head
    // bh (the grid's heads, Z * H) defaults to a large grid: the idle-grid rule off
    m.def("_select", [](int op, int dtype, int head_dim, int device, bool fast_ok, bool masked,
                        bool ragged_ok, bool padding, int64_t rows, int64_t extent,
                        int64_t causal_rows, int64_t bh, int64_t inner) {
        aot::check_op_dtype(op, dtype);
        return aot::choice_names(aot::select_variant(op, dtype, head_dim, device, fast_ok,
                                                     ragged_ok, masked, padding, rows,
                                                     extent < 0 ? rows : extent,
                                                     inner < 0 ? rows : inner, causal_rows, bh));
    }, py::arg("op"), py::arg("dtype"), py::arg("head_dim"), py::arg("device"), py::arg("fast_ok"),
          py::arg("masked"), py::arg("ragged_ok") = false, py::arg("padding") = false,
          py::arg("rows") = aot::kLongRows, py::arg("extent") = -1, py::arg("causal_rows") = 0,
          py::arg("bh") = aot::kLargeGrid, py::arg("inner") = -1,
          "Test hook: the variant the dispatcher runs for these facts, and the siblings it loads.");
    m.def("_select_for_cc", [](int op, int dtype, int head_dim, int cc, bool fast_ok, bool masked,
                               bool ragged_ok, bool padding, int64_t rows, int64_t extent,
                               int64_t causal_rows, int64_t bh, int sms, int64_t inner,
                               int blocks_per_sm) {
        aot::check_op_dtype(op, dtype);
        if (sms < 1 || blocks_per_sm < 1)
            throw std::invalid_argument("aot_sdpa: _select_for_cc takes sms, blocks_per_sm >= 1");
        return aot::choice_names(aot::select_for_cc(op, dtype, head_dim, cc, fast_ok, ragged_ok,
                                                    masked, -1, padding, rows,
                                                    extent < 0 ? rows : extent,
                                                    inner < 0 ? rows : inner, causal_rows,
                                                    aot::Grid{bh, sms, -1, blocks_per_sm}));
    }, py::arg("op"), py::arg("dtype"), py::arg("head_dim"), py::arg("cc"), py::arg("fast_ok"),
          py::arg("masked"), py::arg("ragged_ok") = false, py::arg("padding") = false,
          py::arg("rows") = aot::kLongRows, py::arg("extent") = -1, py::arg("causal_rows") = 0,
          py::arg("bh") = aot::kLargeGrid, py::arg("sms") = 132, py::arg("inner") = -1,
          py::arg("blocks_per_sm") = 2,
          "Test hook: _select for a compute capability (and `sms` multiprocessors, an H100's or "
          "H200's 132 by default, each running `blocks_per_sm` programs of an untiered variant "
          "at once: 2, the 16-bit D = 64 dQ and dK/dV tiles' on the H200) instead of a device "
          "(no driver needed).");
    m.def("_blocks_per_sm", [](const std::string& name, int device) {
        for (int i = 0; i < aot_num_variants; ++i)
            if (name == aot_variants[i].kernel->variant_name) {
                py::gil_scoped_release release;  // aot_unpack takes the GIL itself
                return aot::occupancy(&aot_variants[i], device);
            }
        throw std::invalid_argument("aot_sdpa: no variant named '" + name + "'");
    }, py::arg("name"), py::arg("device"),
          "Test hook: how many programs of the variant one multiprocessor of the device runs at "
          "once (the driver's occupancy, read when its module loads), loading it if need be.");
    m.def("_tier_rows", [](int64_t rows) {
        if (rows < 0) throw std::invalid_argument("aot_sdpa: _tier_rows takes rows >= 0");
        return aot::g_tier_rows.exchange(rows);
    }, py::arg("rows"),
          "Benchmark hook: launches pick their sequence-length tier for max(T, M) = rows "
          "(0: each call's own, the default; a large value: the untiered variants). Returns "
          "the previous setting. Process-wide: for benchmarks, not for concurrent callers.");
    m.def("_tier_siblings", [](const std::string& name) {
        std::vector<std::string> out;
        for (int i = 0; i < aot_num_variants; ++i)
            if (name == aot_variants[i].kernel->variant_name)
                for (const aot_variant_t* t : aot::tier_siblings(&aot_variants[i]))
                    out.push_back(t->kernel->variant_name);
        return out;
    }, py::arg("name"), "Test hook: the other sequence-length tiers a call of this variant loads.");
    m.def("device_arch", &aot::device_arch, py::call_guard<py::gil_scoped_release>(),
          "Compute capability of a device as major*10+minor (needs the driver).");
    m.def("driver_error", []() {
        std::string why;
        return aot::cuda_api(&why) ? std::string() : why;
    }, "Empty when libcuda loaded and initialised, else why not.");
}
