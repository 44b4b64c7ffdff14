/* The forward's host fast path: one C call that checks, allocates and launches the common
 * forward (plain tensors of one dtype on one CUDA device, q, k, v with as many heads, no mask,
 * unit last strides), reading each tensor's attributes once through the CPython API.
 *
 * It accepts exactly what _checks.check_attention's fast path and check_devices accept (minus
 * grouped-query heads and masks) and answers None for anything else: the Python path then runs
 * the rule-by-rule checks, which raise the errors that name the argument and the rule. So every
 * contract check still happens on every call, and the messages live in one place.
 *
 * Registered as a plain METH_FASTCALL function: its arguments arrive as borrowed references,
 * with no conversion layer between the call and the checks (and no pybind11 objects on this
 * path: plain refcounts). Tensors are created by torch's own Python functions (empty_like,
 * empty_strided): the extension does not link libtorch. */
#include <pybind11/pybind11.h>

#include <Python.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "aot_errors.h"
#include "aot_fastpath.h"
#include "aot_runtime.h"

namespace py = pybind11;

namespace aot {

namespace {

constexpr int64_t kInt32Max = 2147483647;
constexpr int64_t kMaxSeqLen = kInt32Max - 1023;  // _checks.MAX_SEQ_LEN: 2**31 - 1024
constexpr int64_t kMaxHeadDim = 256, kMaxHeadDimFp32 = 128;  // _checks.MAX_HEAD_DIM(_FP32)

/* What the fast path needs from torch, looked up once under the GIL and never released (they
 * live as long as torch's module). `ready` < 0: the fast path is off (torch's API or the
 * kernel ABI is not what it expects), every call answers None. */
struct Torch {
    int ready = 0;
    PyObject* tensor_type = nullptr;  // torch.Tensor: exact type only (subclasses go to Python)
    PyObject* dtypes[3] = {};         // torch.float16, bfloat16, float32 (codes 0, 1, 2)
    PyObject* empty_like = nullptr;
    PyObject* empty_strided = nullptr;
    PyObject* raw_stream = nullptr;       // torch._C._cuda_getCurrentRawStream (or none)
    PyObject* matmul_precision = nullptr; // torch.get_float32_matmul_precision
    PyObject* kw_dtype_device = nullptr;  // ("dtype", "device"): empty_strided's keywords
    PyObject *s_shape, *s_stride, *s_dtype, *s_is_cuda, *s_get_device, *s_data_ptr, *s_device,
        *s_requires_grad;
    int op = -1;                          // the forward's op index
    int slot[8] = {};                     // per pointer of the op: which tensor (kQ .. kNull)
};
Torch g_torch;
PyObject* g_cuda_error = nullptr;     // aot_sdpa.CudaError
PyObject* g_no_kernel_error = nullptr; // aot_sdpa.NoKernelError

enum { kQ, kK, kV, kO, kM, kL, kNull, kNumSlots };
const char* const kSlotNames[] = {"Q", "K", "V", "O", "Mstat", "Lstat", "Bias"};
const char* const kIntNames[AOT_NUM_INTS] = {"Z", "H", "T", "M", "D", "HAS_TDO", "Q_LEN", "DIAG",
                                             "HAS_BIAS", "HAS_O"};

/* A new reference to torch.<dotted name>, or nullptr (the Python error cleared). */
PyObject* torch_attr(PyObject* torch, const char* a, const char* b = nullptr) {
    PyObject* x = PyObject_GetAttrString(torch, a);
    if (x != nullptr && b != nullptr) {
        PyObject* y = PyObject_GetAttrString(x, b);
        Py_DECREF(x);
        x = y;
    }
    if (x == nullptr) PyErr_Clear();
    return x;
}

/* The forward's pointer order mapped to our tensors, from the generated op table; false when
 * an op or a name is not the one this file was written against. */
bool map_fwd_abi(Torch* t) {
    for (int i = 0; i < AOT_NUM_INTS; ++i)
        if (std::strcmp(aot_int_names[i], kIntNames[i]) != 0) return false;
    for (int i = 0; i < aot_num_ops; ++i)
        if (std::strcmp(aot_ops[i].name, "fwd") == 0) t->op = i;
    if (t->op < 0) return false;
    const aot_op_t& o = aot_ops[t->op];
    // strides: one triple per owner, which must be Q, K, V, O, Mstat, Bias in this order
    if (std::strcmp(o.stride_owners, "Q,K,V,O,Mstat,Bias") != 0 || o.n_strides != 18 ||
        o.n_ptrs > 8)
        return false;
    const std::vector<std::string> names = split_commas(o.ptr_names);
    if (static_cast<int>(names.size()) != o.n_ptrs) return false;
    int n = 0;
    for (const std::string& name : names) {
        int slot = -1;
        for (int s = 0; s < kNumSlots; ++s)
            if (name == kSlotNames[s]) slot = s;
        if (slot < 0) return false;
        t->slot[n++] = slot;
    }
    return true;
}

bool init_torch(Torch* t) {
    if (t->ready != 0) return t->ready > 0;
    t->ready = -1;
    PyObject* torch = PyImport_ImportModule("torch");
    if (torch == nullptr) {
        PyErr_Clear();
        return false;
    }
    t->tensor_type = torch_attr(torch, "Tensor");
    t->dtypes[0] = torch_attr(torch, "float16");
    t->dtypes[1] = torch_attr(torch, "bfloat16");
    t->dtypes[2] = torch_attr(torch, "float32");
    t->empty_like = torch_attr(torch, "empty_like");
    t->empty_strided = torch_attr(torch, "empty_strided");
    t->raw_stream = torch_attr(torch, "_C", "_cuda_getCurrentRawStream");
    t->matmul_precision = torch_attr(torch, "get_float32_matmul_precision");
    Py_DECREF(torch);
    t->kw_dtype_device = Py_BuildValue("(ss)", "dtype", "device");
    t->s_shape = PyUnicode_InternFromString("shape");
    t->s_stride = PyUnicode_InternFromString("stride");
    t->s_dtype = PyUnicode_InternFromString("dtype");
    t->s_is_cuda = PyUnicode_InternFromString("is_cuda");
    t->s_get_device = PyUnicode_InternFromString("get_device");
    t->s_data_ptr = PyUnicode_InternFromString("data_ptr");
    t->s_device = PyUnicode_InternFromString("device");
    t->s_requires_grad = PyUnicode_InternFromString("requires_grad");
    if (PyErr_Occurred()) PyErr_Clear();
    // (raw_stream may be absent: a CPU build of torch; the fast path then answers None)
    for (PyObject* x : {t->tensor_type, t->dtypes[0], t->dtypes[1], t->dtypes[2], t->empty_like,
                        t->empty_strided, t->matmul_precision, t->kw_dtype_device,
                        t->s_shape, t->s_stride, t->s_dtype, t->s_is_cuda, t->s_get_device,
                        t->s_data_ptr, t->s_device, t->s_requires_grad})
        if (x == nullptr) return false;
    if (!map_fwd_abi(t)) return false;
    t->ready = 1;
    return true;
}

/* A Python int as int64; false (error cleared) when it is not one or does not fit. */
bool to_i64(PyObject* x, int64_t* out) {
    if (!PyLong_Check(x)) return false;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(x, &overflow);
    if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return false;
    }
    *out = v;
    return true;
}

/* The n ints of a tuple-valued attribute or method result (torch.Size, stride()). */
bool read_ints(PyObject* tup, int n, int64_t* out) {
    if (tup == nullptr || !PyTuple_Check(tup) || PyTuple_GET_SIZE(tup) != n) return false;
    for (int i = 0; i < n; ++i)
        if (!to_i64(PyTuple_GET_ITEM(tup, i), out + i)) return false;
    return true;
}

/* An owned reference, released at scope exit. */
struct Ref {
    PyObject* p = nullptr;
    Ref() = default;
    explicit Ref(PyObject* x) : p(x) {}
    Ref(const Ref&) = delete;
    Ref& operator=(const Ref&) = delete;
    ~Ref() { Py_XDECREF(p); }
    PyObject* release() {
        PyObject* x = p;
        p = nullptr;
        return x;
    }
};

/* One of q, k, v as the fast path reads it. */
struct Arg {
    int64_t shape[4], stride[4];
    PyObject* dtype;  // borrowed from the Ref below
    Ref dtype_ref;
};

/* Shape, strides and dtype of an exact torch.Tensor of rank 4; false otherwise (nothing
 * raised: the Python path decides). */
bool read_arg(const Torch& t, PyObject* x, Arg* a) {
    if (Py_TYPE(x) != reinterpret_cast<PyTypeObject*>(t.tensor_type)) return false;
    Ref shape(PyObject_GetAttr(x, t.s_shape));
    if (!read_ints(shape.p, 4, a->shape)) return false;
    Ref stride(PyObject_CallMethodNoArgs(x, t.s_stride));
    if (!read_ints(stride.p, 4, a->stride)) return false;
    a->dtype_ref.p = PyObject_GetAttr(x, t.s_dtype);
    a->dtype = a->dtype_ref.p;
    return a->dtype != nullptr;
}

/* The CUDA device index of x, or -1 when it is not a CUDA tensor. */
int64_t cuda_index(const Torch& t, PyObject* x) {
    Ref is_cuda(PyObject_GetAttr(x, t.s_is_cuda));
    if (is_cuda.p != Py_True) return -1;
    Ref dev(PyObject_CallMethodNoArgs(x, t.s_get_device));
    int64_t d = -1;
    return dev.p != nullptr && to_i64(dev.p, &d) ? d : -1;
}

bool data_ptr(const Torch& t, PyObject* x, uint64_t* out) {
    Ref p(PyObject_CallMethodNoArgs(x, t.s_data_ptr));
    int64_t v = 0;
    if (p.p == nullptr || !to_i64(p.p, &v)) return false;
    *out = static_cast<uint64_t>(v);
    return true;
}

/* A contiguous float32 (B, H, T) tensor on `device` (torch.empty_strided). */
PyObject* row_stat(const Torch& t, int64_t B, int64_t H, int64_t T, PyObject* device) {
    Ref size(Py_BuildValue("(LLL)", static_cast<long long>(B), static_cast<long long>(H),
                           static_cast<long long>(T)));
    Ref stride(Py_BuildValue("(LLL)", static_cast<long long>(H * T), static_cast<long long>(T),
                             1LL));
    if (size.p == nullptr || stride.p == nullptr) return nullptr;
    PyObject* args[4] = {size.p, stride.p, t.dtypes[2], device};
    return PyObject_Vectorcall(t.empty_strided, args, 2, t.kw_dtype_device);
}

/* Row stats nobody reads (the drop-in's inference forward: the kernel only stores m and l, at
 * its end) go to one float32 scratch tensor per device instead of a new tensor per call (one
 * allocation, ~2.5 us of host time on the H200's host, fewer). Every such call writes it and
 * none reads it, so calls on any streams may share it. It is never freed: a scratch outgrown
 * (capacity doubles, up to kScratchMaxRows rows; larger calls allocate their own) stays alive
 * too, because a kernel still in flight on another stream may write into it and the caching
 * allocator would otherwise hand its memory to a new tensor. That bounds the memory to twice
 * the cap, 32 MB per device. A scratch allocated during CUDA-graph capture comes from the
 * graph's private pool and stays valid as long as we hold it (always). */
constexpr int64_t kScratchMaxRows = int64_t{1} << 22;   // 16 MB of float32
constexpr int64_t kScratchMinRows = int64_t{1} << 16;   // the first allocation: 256 KB
struct Scratch {
    PyObject* tensor = nullptr;  // owned; never released
    uint64_t ptr = 0;
    int64_t rows = 0;
    int grown = 0;               // how many outgrown scratches are kept alive
};
Scratch g_scratch[AOT_MAX_DEVICES];

/* The data pointer of device dev's scratch, grown to at least `rows` rows (under the GIL). */
bool stats_scratch(const Torch& t, int64_t dev, int64_t rows, PyObject* q, uint64_t* ptr) {
    if (dev >= AOT_MAX_DEVICES) {
        PyErr_SetString(PyExc_ValueError, "aot_sdpa: device index out of range");
        return false;
    }
    Scratch& sc = g_scratch[dev];
    if (rows > sc.rows) {
        int64_t n = sc.rows > 0 ? 2 * sc.rows : kScratchMinRows;
        while (n < rows) n *= 2;
        if (n > kScratchMaxRows) n = kScratchMaxRows;
        Ref device(PyObject_GetAttr(q, t.s_device));
        if (device.p == nullptr) return false;
        Ref size(Py_BuildValue("(L)", static_cast<long long>(n)));
        Ref stride(Py_BuildValue("(L)", 1LL));
        if (size.p == nullptr || stride.p == nullptr) return false;
        PyObject* args[4] = {size.p, stride.p, t.dtypes[2], device.p};
        Ref fresh(PyObject_Vectorcall(t.empty_strided, args, 2, t.kw_dtype_device));
        uint64_t p = 0;
        if (fresh.p == nullptr || !data_ptr(t, fresh.p, &p)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "aot_sdpa: scratch");
            return false;
        }
        if (sc.tensor != nullptr) ++sc.grown;  // the old one stays referenced (leaked)
        sc.tensor = fresh.release(), sc.ptr = p, sc.rows = n;
    }
    *ptr = sc.ptr;
    return true;
}

/* _stats_scratch(device): the test hook of the scratch, (rows, outgrown scratches kept). */
PyObject* stats_scratch_info(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    int64_t dev = -1;
    if (nargs != 1 || !to_i64(args[0], &dev) || dev < 0 || dev >= AOT_MAX_DEVICES) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "_stats_scratch(device): a device index");
        return nullptr;
    }
    return Py_BuildValue("(Li)", static_cast<long long>(g_scratch[dev].rows), g_scratch[dev].grown);
}

/* Raise the Python exception for a C++ one thrown by the launch (as pybind11 maps them). */
void set_python_error(std::exception_ptr failure) {
    try {
        std::rethrow_exception(failure);
    } catch (const CudaError& e) {
        PyErr_SetString(g_cuda_error, e.what());
    } catch (const NoKernelError& e) {
        PyErr_SetString(g_no_kernel_error, e.what());
    } catch (const std::invalid_argument& e) {
        PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const std::bad_alloc&) {
        PyErr_NoMemory();
    } catch (const std::exception& e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
        PyErr_SetString(PyExc_RuntimeError, "aot_sdpa: unknown error in the launch");
    }
}

/* A call the fast path takes: its arguments read and checked. */
struct Call {
    Arg q, k, v;
    int64_t B, H, T, M, D, causal;
    int code;  // the kernels' dtype code before the TF32 switch: 0 fp16, 1 bf16, 2 fp32
    double scale;
};

/* check_attention's fast path for (q, k, v, scale) with Hkv == H (grouped-query calls fold:
 * Python) and causal a kernel code 0..2; false (nothing raised) for anything it does not
 * accept. Everything but the device (check_devices): callable on a machine without a GPU. */
bool accept(const Torch& t, PyObject* const* args, Call* c) {
    int64_t causal = -1;
    if (!to_i64(args[4], &causal) || causal < 0 || causal > 2) return false;
    if (!read_arg(t, args[0], &c->q) || !read_arg(t, args[1], &c->k) ||
        !read_arg(t, args[2], &c->v))
        return false;
    const Arg &q = c->q, &k = c->k, &v = c->v;
    const int64_t B = q.shape[0], H = q.shape[1], T = q.shape[2], D = q.shape[3];
    const int64_t M = k.shape[2];
    int code = -1;
    for (int i = 0; i < 3; ++i)
        if (q.dtype == t.dtypes[i]) code = i;
    const bool ok = code >= 0 && k.dtype == q.dtype && v.dtype == q.dtype && k.shape[0] == B &&
                    k.shape[1] == H && k.shape[3] == D &&
                    std::memcmp(k.shape, v.shape, sizeof k.shape) == 0 && D >= 1 &&
                    D <= (code == 2 ? kMaxHeadDimFp32 : kMaxHeadDim) && M >= 1 &&
                    M <= kMaxSeqLen && T >= 0 && T <= kMaxSeqLen && B >= 0 && H >= 0 &&
                    B <= kInt32Max && H <= kInt32Max && B * H <= kInt32Max &&
                    q.stride[3] == 1 && k.stride[3] == 1 && v.stride[3] == 1;
    if (!ok) return false;
    PyObject* scale = args[3];  // check_scale: None -> 1/sqrt(D); a finite float (else: Python)
    if (scale == Py_None) {
        c->scale = 1.0 / std::sqrt(static_cast<double>(D));
    } else if (PyFloat_CheckExact(scale) && std::isfinite(PyFloat_AS_DOUBLE(scale))) {
        c->scale = PyFloat_AS_DOUBLE(scale);
    } else {
        return false;
    }
    c->B = B, c->H = H, c->T = T, c->M = M, c->D = D, c->causal = causal, c->code = code;
    return true;
}

/* The bytes [first, last) a strided tensor can touch (none when it has no elements). */
struct Span {
    uint64_t first = 0, last = 0;
};

Span span_of(uint64_t ptr, const int64_t* shape, const int64_t* stride, int rank, int elem) {
    int64_t extent = 0;
    for (int i = 0; i < rank; ++i) {
        if (shape[i] == 0) return Span{};
        extent += (shape[i] - 1) * (stride[i] < 0 ? -stride[i] : stride[i]);
    }
    return Span{ptr, ptr + static_cast<uint64_t>((extent + 1) * elem)};
}

bool overlap(const Span& a, const Span& b) {
    return a.first < a.last && b.first < b.last && a.first < b.last && b.first < a.last;
}

/* out = (o, m, l) as the fast path takes it: exact tensors on `dev` not requiring grad, o
 * shaped and typed like q with a unit last stride, m and l float32 (B, H, T) with one stride triple (the kernel's
 * Mstat strides serve both), none of them overlapping q, k, v or each other
 * (_checks.check_out's rules, which raise for what this refuses). */
bool accept_out(const Torch& t, PyObject* out, const Call& c, int64_t dev, PyObject** objs,
                uint64_t* ptrs, int64_t (*strides)[4], const uint64_t* in_ptrs) {
    if (!PyTuple_CheckExact(out) || PyTuple_GET_SIZE(out) != 3) return false;
    const int64_t stat_shape[3] = {c.B, c.H, c.T};
    for (int i = 0; i < 3; ++i) {
        PyObject* x = PyTuple_GET_ITEM(out, i);
        if (Py_TYPE(x) != reinterpret_cast<PyTypeObject*>(t.tensor_type)) return false;
        Ref requires_grad(PyObject_GetAttr(x, t.s_requires_grad));  // (Python decides)
        if (requires_grad.p != Py_False) return false;
        Ref dtype(PyObject_GetAttr(x, t.s_dtype));
        if (dtype.p != (i == 0 ? c.q.dtype : t.dtypes[2])) return false;
        Ref shape(PyObject_GetAttr(x, t.s_shape));
        int64_t sh[4];
        if (!read_ints(shape.p, i == 0 ? 4 : 3, sh)) return false;
        if (std::memcmp(sh, i == 0 ? c.q.shape : stat_shape, (i == 0 ? 4 : 3) * sizeof(int64_t)))
            return false;
        Ref st(PyObject_CallMethodNoArgs(x, t.s_stride));
        if (!read_ints(st.p, i == 0 ? 4 : 3, strides[i])) return false;
        if (cuda_index(t, x) != dev || !data_ptr(t, x, &ptrs[i])) return false;
        objs[i] = x;
    }
    if (strides[0][3] != 1 || std::memcmp(strides[1], strides[2], 3 * sizeof(int64_t)) != 0)
        return false;
    const int qe = c.code == 2 ? 4 : 2;
    const Span in[3] = {span_of(in_ptrs[0], c.q.shape, c.q.stride, 4, qe),
                        span_of(in_ptrs[1], c.k.shape, c.k.stride, 4, qe),
                        span_of(in_ptrs[2], c.v.shape, c.v.stride, 4, qe)};
    const Span mine[3] = {span_of(ptrs[0], c.q.shape, strides[0], 4, qe),
                          span_of(ptrs[1], stat_shape, strides[1], 3, 4),
                          span_of(ptrs[2], stat_shape, strides[2], 3, 4)};
    for (int i = 0; i < 3; ++i) {
        for (int j = 0; j < 3; ++j)
            if (overlap(mine[i], in[j])) return false;
        for (int j = i + 1; j < 3; ++j)
            if (overlap(mine[i], mine[j])) return false;
    }
    return true;
}

/* _fwd_fast(q, k, v, scale, causal, stats, out): see g_fwd_fast_def. */
PyObject* fwd_fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "_fwd_fast(q, k, v, scale, causal, stats, out)");
        return nullptr;
    }
    Torch& t = g_torch;
    Call c;
    const int stats = PyObject_IsTrue(args[5]);
    if (stats < 0 || !init_torch(&t) || t.raw_stream == nullptr || !accept(t, args, &c)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *q = args[0], *k = args[1], *v = args[2], *out = args[6];
    // check_devices: one CUDA device for all three
    const int64_t dev = cuda_index(t, q);
    uint64_t in_ptrs[3];
    if (dev < 0 || cuda_index(t, k) != dev || cuda_index(t, v) != dev ||
        !data_ptr(t, q, &in_ptrs[0]) || !data_ptr(t, k, &in_ptrs[1]) ||
        !data_ptr(t, v, &in_ptrs[2])) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject* objs[3] = {};     // o, m, l (borrowed: out's or the Refs below)
    uint64_t out_ptrs[3] = {};  // their data pointers
    int64_t out_strides[3][4] = {};
    Ref o, m, l;
    if (out != Py_None) {  // the caller's buffers (with stats only)
        if (!stats || !accept_out(t, out, c, dev, objs, out_ptrs, out_strides, in_ptrs)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
    } else {  // o like q, and the row stats
        o.p = PyObject_CallOneArg(t.empty_like, q);
        if (o.p == nullptr) return nullptr;
        objs[0] = o.p;
        const int64_t rows = c.B * c.H * c.T;
        if (!stats && rows <= kScratchMaxRows) {  // stats nobody reads: the device's scratch
            if (!stats_scratch(t, dev, rows, q, &out_ptrs[1])) return nullptr;
            out_ptrs[2] = out_ptrs[1];
        } else {
            Ref device(PyObject_GetAttr(q, t.s_device));
            if (device.p == nullptr) return nullptr;
            m.p = row_stat(t, c.B, c.H, c.T, device.p);
            if (m.p == nullptr) return nullptr;
            if (stats) {
                l.p = row_stat(t, c.B, c.H, c.T, device.p);
                if (l.p == nullptr) return nullptr;
            }
            objs[1] = m.p, objs[2] = stats ? l.p : m.p;  // (one tensor for both: unread)
        }
        Ref os(PyObject_CallMethodNoArgs(o.p, t.s_stride));
        if (!read_ints(os.p, 4, out_strides[0])) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "aot_sdpa: o.stride()");
            return nullptr;
        }
        for (int i = 0; i < 3; ++i)
            if (objs[i] != nullptr && !data_ptr(t, objs[i], &out_ptrs[i])) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "aot_sdpa: data_ptr()");
                return nullptr;
            }
        out_strides[1][0] = c.H * c.T, out_strides[1][1] = c.T, out_strides[1][2] = 1;
    }
    int code = c.code;
    if (code == 2) {  // dtype_code: float32 under a matmul precision other than "highest": TF32
        Ref prec(PyObject_CallNoArgs(t.matmul_precision));
        if (prec.p == nullptr) return nullptr;
        const char* s = PyUnicode_Check(prec.p) ? PyUnicode_AsUTF8(prec.p) : nullptr;
        if (s == nullptr) return nullptr;
        if (std::strcmp(s, "highest") != 0) code = 3;
    }
    const uint64_t p[kNumSlots] = {in_ptrs[0],  in_ptrs[1],  in_ptrs[2], out_ptrs[0],
                                   out_ptrs[1], out_ptrs[2], 0};
    const aot_op_t& op = aot_ops[t.op];
    uint64_t ptrs[8];
    for (int i = 0; i < op.n_ptrs; ++i) ptrs[i] = p[t.slot[i]];
    // stride triples (batch, head, row) in the owners' order Q, K, V, O, Mstat, Bias
    const int64_t* qs = c.q.stride, *ks = c.k.stride, *vs = c.v.stride;
    const int64_t* os = out_strides[0], *ms = out_strides[1];
    const int64_t strides[18] = {qs[0], qs[1], qs[2], ks[0], ks[1], ks[2], vs[0], vs[1], vs[2],
                                 os[0], os[1], os[2], ms[0], ms[1], ms[2], 0,     0,     0};
    const int64_t diag = c.causal == 2 ? c.M - c.T : (c.causal == 1 ? 0 : c.M - 1);
    const int32_t ints[AOT_NUM_INTS] = {
        static_cast<int32_t>(c.B), static_cast<int32_t>(c.H), static_cast<int32_t>(c.T),
        static_cast<int32_t>(c.M), static_cast<int32_t>(c.D), 0, static_cast<int32_t>(c.T),
        static_cast<int32_t>(diag), 0, 1};  // Z H T M D HAS_TDO Q_LEN DIAG HAS_BIAS HAS_O
    Ref index(PyLong_FromLongLong(dev));
    if (index.p == nullptr) return nullptr;
    Ref stream_obj(PyObject_CallOneArg(t.raw_stream, index.p));
    int64_t stream = 0;
    if (stream_obj.p == nullptr || !to_i64(stream_obj.p, &stream)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "aot_sdpa: current stream");
        return nullptr;
    }
    std::exception_ptr failure;
    Py_BEGIN_ALLOW_THREADS  // the launch runs without the GIL, as launch_named's
    try {
        launch_raw(t.op, code, static_cast<int>(dev), static_cast<uintptr_t>(stream), ptrs,
                   op.n_ptrs, strides, 18, ints, c.scale);
    } catch (...) {
        failure = std::current_exception();
    }
    Py_END_ALLOW_THREADS
    if (failure) {
        set_python_error(failure);
        return nullptr;
    }
    if (!stats) return Py_NewRef(objs[0]);
    return PyTuple_Pack(3, objs[0], objs[1], objs[2]);
}

/* _fwd_fast_accepts(q, k, v, scale, causal): the test hook of accept(). */
PyObject* fwd_fast_accepts(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "_fwd_fast_accepts(q, k, v, scale, causal)");
        return nullptr;
    }
    Call c;
    PyObject* fargs[7] = {args[0], args[1], args[2], args[3], args[4], Py_True, Py_None};
    if (!init_torch(&g_torch) || !accept(g_torch, fargs, &c)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(LLLLLid)", static_cast<long long>(c.B), static_cast<long long>(c.H),
                         static_cast<long long>(c.T), static_cast<long long>(c.M),
                         static_cast<long long>(c.D), c.code, c.scale);
}

PyMethodDef g_fwd_fast_accepts_def = {
    "_fwd_fast_accepts",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fwd_fast_accepts)),
    METH_FASTCALL,
    "Test hook: (B, H, T, M, D, dtype code before the TF32 switch, scale) when _fwd_fast's "
    "checks accept (q, k, v, scale, causal), the device aside; else None. No driver needed."};

PyMethodDef g_stats_scratch_def = {
    "_stats_scratch",
    reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&stats_scratch_info)),
    METH_FASTCALL,
    "Test hook: (rows, outgrown scratches kept) of the device's scratch for unread row stats."};

PyMethodDef g_fwd_fast_def = {
    "_fwd_fast", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&fwd_fast)),
    METH_FASTCALL,
    "_fwd_fast(q, k, v, scale, causal, stats, out): the forward in one call when the arguments "
    "are the common case (see csrc/aot_fastpath.cpp), else None (nothing raised: the caller's "
    "checks decide). stats: return (o, m, l), else o alone (m and l to the device's scratch); "
    "out: None, or (o, m, l) to write (with stats only)."};

}  // namespace

void add_fast_path(py::module_& m, PyObject* cuda_error, PyObject* no_kernel_error) {
    g_cuda_error = cuda_error;
    g_no_kernel_error = no_kernel_error;
    Py_INCREF(cuda_error);
    Py_INCREF(no_kernel_error);
    for (PyMethodDef* def : {&g_fwd_fast_def, &g_fwd_fast_accepts_def, &g_stats_scratch_def}) {
        PyObject* f = PyCFunction_NewEx(def, nullptr, m.ptr());
        if (f == nullptr) throw py::error_already_set();
        m.add_object(def->ml_name, py::reinterpret_steal<py::object>(f));
    }
}

}  // namespace aot
