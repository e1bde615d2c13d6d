// Shared pieces of cnnexp's oneDNN kernels: the CPU engine, one lock around every execution,
// the primitive cache and the translation of XLA FFI buffers into oneDNN memory descriptors.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace cnnexp {

namespace ffi = xla::ffi;
using dnnl::memory;

// One CPU engine and one stream for the process.
dnnl::engine& Engine();
dnnl::stream& Stream();

// Runs `task` on the one thread of the process that calls oneDNN, and waits for it. XLA calls
// handlers from several of its threads; each calling thread would become the master of its own
// OpenMP team, and with more OpenMP threads than cores GNU OpenMP stops spinning between
// parallel regions, for every team in the process (PyTorch's too): measured 30-40% slower. One
// thread keeps one team. Tasks run one at a time, so the caches below need no lock of their
// own. Exceptions thrown by `task` are rethrown in the caller.
void RunOnOneDnnThread(const std::function<void()>& task);

// memory::data_type of an FFI buffer (f32, bf16, f16); throws std::invalid_argument otherwise.
memory::data_type DataType(ffi::DataType type);

// An NHWC activation tensor as oneDNN sees it: dims N, C, H, W in nhwc layout.
memory::desc Nhwc(const ffi::AnyBuffer::Dimensions& dims, memory::data_type type);
memory::desc Nhwc(memory::dim n, memory::dim h, memory::dim w, memory::dim c, memory::data_type type);

// A two-element FFI attribute as oneDNN dims.
memory::dims Dims2(ffi::Span<const int64_t> values);

// Primitive descriptors take tens of microseconds to create; every handler keeps what it built
// for one shape and set of attributes here, under a key that spells them out. Used only on the
// oneDNN thread.
template <typename Entry>
class Cache {
 public:
  Entry& Get(const std::string& key, const std::function<std::unique_ptr<Entry>()>& make) {
    auto found = entries_.find(key);
    if (found == entries_.end()) found = entries_.emplace(key, make()).first;
    return *found->second;
  }

 private:
  std::unordered_map<std::string, std::unique_ptr<Entry>> entries_;
};

std::ostream& operator<<(std::ostream& out, const memory::dims& dims);

// Builds a cache key from any streamable values.
template <typename... Parts>
std::string Key(const Parts&... parts) {
  std::ostringstream out;
  ((out << parts << '|'), ...);
  return out.str();
}

// Runs `body` on the oneDNN thread, turning oneDNN and C++ exceptions into an FFI error that
// names `what`.
ffi::Error Guarded(const char* what, const std::function<void()>& body);

// A buffer's data as oneDNN memory of `desc` (no copy).
memory Wrap(const memory::desc& desc, void* data);

}  // namespace cnnexp
