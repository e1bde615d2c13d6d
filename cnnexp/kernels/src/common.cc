#include "common.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <stdexcept>
#include <thread>

#include <unistd.h>

namespace cnnexp {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  static dnnl::stream stream(Engine());
  return stream;
}

namespace {

// Nanoseconds spent running tasks on the oneDNN thread since the library loaded: what
// `cnnexp bench` reports as the kernels' share of a step (the rest runs in XLA).
std::atomic<int64_t> task_nanoseconds{0};

// The oneDNN thread and its hand-over of one task at a time.
class OneDnnThread {
 public:
  // The thread of this process; a forked child gets a thread of its own (threads do not survive
  // fork), whose first parallel region starts a fresh OpenMP team.
  static OneDnnThread& Get() {
    static std::mutex creation;
    static OneDnnThread* current = nullptr;
    std::lock_guard<std::mutex> guard(creation);
    if (current == nullptr || current->pid_ != getpid()) current = new OneDnnThread();  // never destroyed
    return *current;
  }

  void Run(const std::function<void()>& task) {
    std::lock_guard<std::mutex> one_caller(callers_);
    std::unique_lock<std::mutex> lock(mutex_);
    task_ = &task;
    error_ = nullptr;
    ready_.notify_one();
    done_.wait(lock, [this] { return task_ == nullptr; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  OneDnnThread() : pid_(getpid()) { std::thread([this] { Loop(); }).detach(); }

  [[noreturn]] void Loop() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ready_.wait(lock, [this] { return task_ != nullptr; });
      const auto start = std::chrono::steady_clock::now();
      try {
        (*task_)();
      } catch (...) {
        error_ = std::current_exception();
      }
      task_nanoseconds += std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now() - start).count();
      task_ = nullptr;
      done_.notify_one();
    }
  }

  const pid_t pid_;
  std::mutex callers_, mutex_;
  std::condition_variable ready_, done_;
  const std::function<void()>* task_ = nullptr;
  std::exception_ptr error_;
};

}  // namespace

void RunOnOneDnnThread(const std::function<void()>& task) { OneDnnThread::Get().Run(task); }

memory::data_type DataType(ffi::DataType type) {
  switch (type) {
    case ffi::DataType::F32:
      return memory::data_type::f32;
    case ffi::DataType::BF16:
      return memory::data_type::bf16;
    case ffi::DataType::F16:
      return memory::data_type::f16;
    default:
      throw std::invalid_argument("only float32, bfloat16 and float16 tensors are supported");
  }
}

memory::desc Nhwc(memory::dim n, memory::dim h, memory::dim w, memory::dim c, memory::data_type type) {
  return memory::desc({n, c, h, w}, type, memory::format_tag::nhwc);
}

memory::desc Nhwc(const ffi::AnyBuffer::Dimensions& dims, memory::data_type type) {
  if (dims.size() != 4) throw std::invalid_argument("expected an NHWC tensor of rank 4");
  return Nhwc(dims[0], dims[1], dims[2], dims[3], type);
}

memory::dims Dims2(ffi::Span<const int64_t> values) {
  if (values.size() != 2) throw std::invalid_argument("expected two values, one per spatial axis");
  return {values[0], values[1]};
}

std::ostream& operator<<(std::ostream& out, const memory::dims& dims) {
  for (auto d : dims) out << d << ',';
  return out;
}

ffi::Error Guarded(const char* what, const std::function<void()>& body) {
  try {
    RunOnOneDnnThread(body);
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("cnnexp oneDNN ") + what + ": " + e.what() +
                                " (status " + std::to_string(static_cast<int>(e.status)) + ")");
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("cnnexp oneDNN ") + what + ": " + e.what());
  }
}

memory Wrap(const memory::desc& desc, void* data) { return memory(desc, Engine(), data); }

}  // namespace cnnexp

// Total time spent in oneDNN calls so far, in nanoseconds.
extern "C" int64_t cnnexp_kernel_nanoseconds() { return cnnexp::task_nanoseconds.load(); }

// What the Python side reports and checks: the oneDNN version the library runs with.
extern "C" const char* cnnexp_onednn_version() {
  static std::string version = [] {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
  }();
  return version.c_str();
}
