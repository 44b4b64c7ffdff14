/* Unpacking of the embedded kernel images (one xz stream per (op, arch), written by
 * build_tools/pack.py). An image is unpacked the first time one of its kernels is loaded,
 * with Python's standard lzma module (the extension links no compression library), into an
 * aligned buffer that lives as long as the process. Several threads may unpack the same
 * image at once (lzma releases the GIL while it works): the first to finish publishes its
 * buffer, the others free theirs and use the published one. */
#include <pybind11/pybind11.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "aot_errors.h"
#include "aot_runtime.h"

namespace py = pybind11;

namespace {

/* Unpack `image` into a new 64-byte-aligned buffer; nullptr with `why` set on failure.
 * Call with the GIL held. */
unsigned char* unpack_with_python(const aot_image_t* image, std::string* why) {
    try {
        py::bytes packed(reinterpret_cast<const char*>(image->packed), image->packed_bytes);
        py::object raw = py::module_::import("lzma").attr("decompress")(packed);
        char* data = nullptr;
        Py_ssize_t size = 0;
        if (PyBytes_AsStringAndSize(raw.ptr(), &data, &size) != 0) throw py::error_already_set();
        if (static_cast<size_t>(size) != image->raw_bytes) {
            *why = "unpacked " + std::to_string(size) + " bytes, the build recorded " +
                   std::to_string(image->raw_bytes);
            return nullptr;
        }
        const size_t alloc = (static_cast<size_t>(size) + 63) / 64 * 64;
        auto* buf = static_cast<unsigned char*>(std::aligned_alloc(64, alloc ? alloc : 64));
        if (buf == nullptr) {
            *why = "out of host memory";
            return nullptr;
        }
        std::memcpy(buf, data, static_cast<size_t>(size));
        return buf;
    } catch (py::error_already_set& e) {
        *why = e.what();  // e.g. a Python built without its lzma module
        return nullptr;
    }
}

}  // namespace

extern "C" CUresult aot_unpack(aot_image_t* image, const unsigned char** raw) {
    const unsigned char* ready = __atomic_load_n(&image->raw, __ATOMIC_ACQUIRE);
    if (ready == nullptr) {
        std::string why;
        unsigned char* buf;
        {
            py::gil_scoped_acquire gil;
            ready = __atomic_load_n(&image->raw, __ATOMIC_ACQUIRE);
            buf = ready == nullptr ? unpack_with_python(image, &why) : nullptr;
        }
        if (ready == nullptr) {
            if (buf == nullptr) {
                aot::set_error_detail(std::string("unpacking the kernels of '") + image->name +
                                      "': " + why);
                return CUDA_ERROR_INVALID_IMAGE;
            }
            const unsigned char* expected = nullptr;
            if (__atomic_compare_exchange_n(&image->raw, &expected, buf, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                ready = buf;
            } else {  // another thread published first
                std::free(buf);
                ready = expected;
            }
        }
    }
    *raw = ready;
    return CUDA_SUCCESS;
}
