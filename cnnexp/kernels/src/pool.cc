// Max and average pooling of NHWC tensors, forward and backward, as XLA FFI handlers.
// Padding never counts: max pooling ignores padded pixels, average pooling divides by the
// number of real pixels in each window (oneDNN's pooling_avg_exclude_padding), as layers.pool2d.
// Max pooling's backward pass needs to know where each window's maximum was: the training
// forward pass writes it to a workspace, an opaque byte buffer that JAX carries to the backward.
#include <optional>
#include <stdexcept>

#include "common.h"

namespace cnnexp {
namespace {

using dnnl::pooling_backward;
using dnnl::pooling_forward;

constexpr int64_t kMax = 0;  // the `kind` attribute; anything else is average pooling

struct PoolShape {
  memory::dim n, h, w, c, oh, ow;
  memory::dims window, strides, pad_l, pad_r;
  dnnl::algorithm algorithm;

  PoolShape(ffi::AnyBuffer::Dimensions input, ffi::AnyBuffer::Dimensions output, int64_t kind,
            ffi::Span<const int64_t> window_, ffi::Span<const int64_t> stride,
            ffi::Span<const int64_t> padding_low, ffi::Span<const int64_t> padding_high)
      : PoolShape(input[0], input[1], input[2], input[3], output[1], output[2], kind, Dims2(window_), Dims2(stride),
                  Dims2(padding_low), Dims2(padding_high)) {
    if (input.size() != 4 || output.size() != 4 || input[3] != output[3])
      throw std::invalid_argument("expected NHWC input and output with the same channels");
  }

  PoolShape(memory::dim n_, memory::dim h_, memory::dim w_, memory::dim c_, memory::dim oh_, memory::dim ow_,
            int64_t kind, memory::dims window_, memory::dims strides_, memory::dims pad_l_, memory::dims pad_r_)
      : n(n_), h(h_), w(w_), c(c_), oh(oh_), ow(ow_), window(window_), strides(strides_), pad_l(pad_l_),
        pad_r(pad_r_),
        algorithm(kind == kMax ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding) {}

  std::string key() const { return Key(n, h, w, c, oh, ow, window, strides, pad_l, pad_r, int(algorithm)); }

  pooling_forward::primitive_desc forward(memory::data_type type, bool training) const {
    return pooling_forward::primitive_desc(
        Engine(), training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, algorithm,
        Nhwc(n, h, w, c, type), Nhwc(n, oh, ow, c, type), strides, window, memory::dims{0, 0}, pad_l, pad_r);
  }
};

struct Forward {
  pooling_forward primitive;
  memory::desc src, dst, workspace;
};

struct Backward {
  pooling_backward primitive;
  memory::desc diff_src, diff_dst, workspace;
};

Forward& ForwardEntry(const PoolShape& s, memory::data_type type, bool training) {
  static Cache<Forward> cache;
  return cache.Get(Key("fwd", s.key(), int(type), training), [&] {
    auto pd = s.forward(type, training);
    return std::unique_ptr<Forward>(new Forward{pooling_forward(pd), pd.src_desc(), pd.dst_desc(),
                                                pd.workspace_desc()});
  });
}

// Results: the pooled tensor, and for training max pooling, a second one: the workspace.
ffi::Error PoolForwardImpl(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> y, ffi::RemainingRets rest, int64_t kind,
                           ffi::Span<const int64_t> window, ffi::Span<const int64_t> stride,
                           ffi::Span<const int64_t> padding_low, ffi::Span<const int64_t> padding_high) {
  return Guarded("pooling forward", [&] {
    PoolShape s(x.dimensions(), y->dimensions(), kind, window, stride, padding_low, padding_high);
    const bool training = rest.size() == 1;
    auto& entry = ForwardEntry(s, DataType(x.element_type()), training);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, Wrap(entry.src, x.untyped_data())},
        {DNNL_ARG_DST, Wrap(entry.dst, y->untyped_data())},
    };
    if (training) {
      auto workspace = rest.get<ffi::AnyBuffer>(0).value();
      if (workspace->size_bytes() != entry.workspace.get_size())
        throw std::invalid_argument("workspace of " + std::to_string(workspace->size_bytes()) + " bytes, expected " +
                                    std::to_string(entry.workspace.get_size()));
      args[DNNL_ARG_WORKSPACE] = Wrap(entry.workspace, workspace->untyped_data());
    }
    entry.primitive.execute(Stream(), args);
    Stream().wait();
  });
}

// Arguments: the output gradient, and for max pooling the forward pass's workspace.
ffi::Error PoolBackwardImpl(ffi::AnyBuffer dy, ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> dx, int64_t kind,
                            ffi::Span<const int64_t> window, ffi::Span<const int64_t> stride,
                            ffi::Span<const int64_t> padding_low, ffi::Span<const int64_t> padding_high) {
  return Guarded("pooling backward", [&] {
    static Cache<Backward> cache;
    PoolShape s(dx->dimensions(), dy.dimensions(), kind, window, stride, padding_low, padding_high);
    const auto type = DataType(dy.element_type());
    const bool with_workspace = s.algorithm == dnnl::algorithm::pooling_max;
    if (with_workspace != (rest.size() == 1))
      throw std::invalid_argument("max pooling's backward pass takes the workspace, average pooling's none");
    auto& entry = cache.Get(Key("bwd", s.key(), int(type)), [&] {
      auto hint = s.forward(type, true);
      pooling_backward::primitive_desc pd(Engine(), s.algorithm, Nhwc(s.n, s.h, s.w, s.c, type),
                                          Nhwc(s.n, s.oh, s.ow, s.c, type), s.strides, s.window,
                                          memory::dims{0, 0}, s.pad_l, s.pad_r, hint);
      return std::unique_ptr<Backward>(new Backward{pooling_backward(pd), pd.diff_src_desc(), pd.diff_dst_desc(),
                                                    pd.workspace_desc()});
    });
    std::unordered_map<int, memory> args{
        {DNNL_ARG_DIFF_DST, Wrap(entry.diff_dst, dy.untyped_data())},
        {DNNL_ARG_DIFF_SRC, Wrap(entry.diff_src, dx->untyped_data())},
    };
    if (with_workspace) args[DNNL_ARG_WORKSPACE] = Wrap(entry.workspace, rest.get<ffi::AnyBuffer>(0).value().untyped_data());
    entry.primitive.execute(Stream(), args);
    Stream().wait();
  });
}

}  // namespace
}  // namespace cnnexp

namespace ffi = xla::ffi;

// The workspace size, in bytes, of training max pooling with this geometry, for the Python side
// to allocate the forward pass's second result; 0 when oneDNN cannot pool it, -1 on an error.
// `dtype`: 0 float32, 1 bfloat16, 2 float16.
extern "C" int64_t cnnexp_max_pool_workspace_bytes(int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh,
                                                   int64_t ow, int64_t window_h, int64_t window_w,
                                                   int64_t stride_h, int64_t stride_w, int64_t pad_top,
                                                   int64_t pad_left, int64_t pad_bottom, int64_t pad_right,
                                                   int64_t dtype) {
  using type = dnnl::memory::data_type;
  static const type types[] = {type::f32, type::bf16, type::f16};
  if (dtype < 0 || dtype > 2) return -1;
  int64_t bytes = -1;
  try {
    cnnexp::RunOnOneDnnThread([&] {
      cnnexp::PoolShape s(n, h, w, c, oh, ow, cnnexp::kMax, {window_h, window_w}, {stride_h, stride_w},
                          {pad_top, pad_left}, {pad_bottom, pad_right});
      bytes = static_cast<int64_t>(cnnexp::ForwardEntry(s, types[dtype], true).workspace.get_size());
    });
  } catch (const std::exception&) {
    return -1;
  }
  return bytes;
}

// The attributes both pooling handlers take after their buffers (cnnexp.kernels.pool).
template <typename Binding>
auto WithWindow(Binding binding) {
  return std::move(binding).template Attr<int64_t>("kind")
      .template Attr<ffi::Span<const int64_t>>("window")
      .template Attr<ffi::Span<const int64_t>>("stride")
      .template Attr<ffi::Span<const int64_t>>("padding_low")
      .template Attr<ffi::Span<const int64_t>>("padding_high");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_pool_forward, cnnexp::PoolForwardImpl,
                              WithWindow(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>().RemainingRets()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_pool_backward, cnnexp::PoolBackwardImpl,
                              WithWindow(ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().RemainingArgs().Ret<ffi::AnyBuffer>()));
