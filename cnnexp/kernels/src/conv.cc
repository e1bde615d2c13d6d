// 2-D convolution of NHWC activations with HWIO weights: forward, backward-data and
// backward-weights as XLA FFI handlers. The weights live in HWIO inside JAX; every call lets
// oneDNN choose its own (blocked) weight layout and reorders into it, because plain HWIO
// weights make oneDNN fall back to slow reference kernels (cpu-kernels.md: 5-80x slower).
#include <optional>
#include <stdexcept>

#include "common.h"

namespace cnnexp {
namespace {

using dnnl::convolution_backward_data;
using dnnl::convolution_backward_weights;
using dnnl::convolution_forward;

// The geometry of one convolution, read off its tensors and attributes.
struct ConvShape {
  memory::dim n, h, w, c;     // input
  memory::dim oh, ow, o;      // output
  memory::dim kh, kw, groups;
  memory::dims strides, dilates, pad_l, pad_r;  // dilates in oneDNN's convention: factor - 1

  ConvShape(ffi::AnyBuffer::Dimensions input, ffi::AnyBuffer::Dimensions kernel,
            ffi::AnyBuffer::Dimensions output, ffi::Span<const int64_t> stride,
            ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> padding_low,
            ffi::Span<const int64_t> padding_high, int64_t feature_groups)
      : n(input[0]), h(input[1]), w(input[2]), c(input[3]),
        oh(output[1]), ow(output[2]), o(output[3]),
        kh(kernel[0]), kw(kernel[1]), groups(feature_groups),
        strides(Dims2(stride)), dilates(Dims2(dilation)),
        pad_l(Dims2(padding_low)), pad_r(Dims2(padding_high)) {
    if (input.size() != 4 || kernel.size() != 4 || output.size() != 4)
      throw std::invalid_argument("expected NHWC activations and HWIO weights");
    if (groups < 1 || c % groups || o % groups || kernel[2] * groups != c || kernel[3] != o)
      throw std::invalid_argument("weights do not match the channels and feature groups");
    for (auto& d : dilates) d -= 1;
  }

  std::string key() const {
    return Key(n, h, w, c, oh, ow, o, kh, kw, groups, strides, dilates, pad_l, pad_r);
  }

  memory::dims weight_dims() const {
    if (groups == 1) return {o, c, kh, kw};
    return {groups, o / groups, c / groups, kh, kw};
  }

  // HWIO in memory, as oneDNN dims (O, I, KH, KW) or (G, O/G, I/G, KH, KW) with strides.
  memory::desc hwio(memory::data_type type) const {
    const memory::dim i = c / groups;
    if (groups == 1) return memory::desc(weight_dims(), type, memory::dims{1, o, kw * i * o, i * o});
    return memory::desc(weight_dims(), type, memory::dims{o / groups, 1, o, kw * i * o, i * o});
  }

  memory::desc any_weights(memory::data_type type) const {
    return memory::desc(weight_dims(), type, memory::format_tag::any);
  }

  memory::desc src(memory::data_type type) const { return Nhwc(n, h, w, c, type); }
  memory::desc dst(memory::data_type type) const { return Nhwc(n, oh, ow, o, type); }
};

// The forward primitive descriptor that backward primitives take as their hint, and the
// forward pass itself.
convolution_forward::primitive_desc ForwardPd(const ConvShape& s, memory::data_type src, memory::data_type weights,
                                              memory::data_type dst, std::optional<memory::data_type> bias,
                                              bool relu) {
  dnnl::primitive_attr attr;
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  auto bias_desc = bias ? memory::desc({s.o}, *bias, memory::format_tag::a) : memory::desc();
  return convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, s.src(src),
      s.any_weights(weights), bias_desc, s.dst(dst), s.strides, s.dilates, s.pad_l, s.pad_r, attr);
}

// Weights moved between JAX's HWIO and the layout a primitive chose, through a buffer owned
// here: into the primitive's layout for the weights it reads (`Direction::kIn`), out of it for
// the weight gradient it writes (`Direction::kOut`).
struct WeightReorder {
  enum class Direction { kIn, kOut };
  memory::desc user;
  memory blocked;
  std::optional<dnnl::reorder> reorder;

  WeightReorder(const memory::desc& user_desc, const memory::desc& chosen, Direction direction) : user(user_desc) {
    if (chosen == user_desc) return;
    blocked = memory(chosen, Engine());
    memory plain(user_desc, Engine(), DNNL_MEMORY_NONE);
    reorder = direction == Direction::kIn ? dnnl::reorder(plain, blocked) : dnnl::reorder(blocked, plain);
  }

  // kIn: the memory the primitive reads, for HWIO weights at `data`.
  memory In(void* data) {
    memory plain = Wrap(user, data);
    if (!reorder) return plain;
    reorder->execute(Stream(), plain, blocked);
    return blocked;
  }

  // kOut: the memory the primitive writes, for HWIO weights at `data`; call Finish after it ran.
  memory Out(void* data) { return reorder ? blocked : Wrap(user, data); }
  void Finish(void* data) {
    if (!reorder) return;
    memory plain = Wrap(user, data);
    reorder->execute(Stream(), blocked, plain);
  }
};

struct Forward {
  convolution_forward primitive;
  WeightReorder weights;
  memory::desc src, dst, bias;
};

struct BackwardData {
  convolution_backward_data primitive;
  WeightReorder weights;
  memory::desc diff_src, diff_dst;
};

struct BackwardWeights {
  convolution_backward_weights primitive;
  WeightReorder diff_weights;
  memory::desc src, diff_dst, diff_bias;
};

ffi::Error ConvForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer kernel, ffi::RemainingArgs rest,
                           ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> stride,
                           ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> padding_low,
                           ffi::Span<const int64_t> padding_high, int64_t groups, int64_t relu) {
  return Guarded("convolution forward", [&] {
    static Cache<Forward> cache;
    ConvShape s(x.dimensions(), kernel.dimensions(), y->dimensions(), stride, dilation, padding_low, padding_high,
                groups);
    std::optional<ffi::AnyBuffer> bias;
    if (rest.size() == 1) bias = rest.get<ffi::AnyBuffer>(0).value();
    const auto tx = DataType(x.element_type()), tw = DataType(kernel.element_type()),
               ty = DataType(y->element_type());
    std::optional<memory::data_type> tb;
    if (bias) tb = DataType(bias->element_type());
    auto& entry = cache.Get(Key("fwd", s.key(), int(tx), int(tw), int(ty), tb ? int(*tb) : -1, relu), [&] {
      auto pd = ForwardPd(s, tx, tw, ty, tb, relu != 0);
      return std::unique_ptr<Forward>(new Forward{convolution_forward(pd), WeightReorder(s.hwio(tw), pd.weights_desc(), WeightReorder::Direction::kIn),
                                                  pd.src_desc(), pd.dst_desc(),
                                                  tb ? pd.bias_desc() : memory::desc()});
    });
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, Wrap(entry.src, x.untyped_data())},
        {DNNL_ARG_WEIGHTS, entry.weights.In(kernel.untyped_data())},
        {DNNL_ARG_DST, Wrap(entry.dst, y->untyped_data())},
    };
    if (bias) args[DNNL_ARG_BIAS] = Wrap(entry.bias, bias->untyped_data());
    entry.primitive.execute(Stream(), args);
    Stream().wait();
  });
}

ffi::Error ConvBackwardDataImpl(ffi::AnyBuffer dy, ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> dx,
                                ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation,
                                ffi::Span<const int64_t> padding_low, ffi::Span<const int64_t> padding_high,
                                int64_t groups) {
  return Guarded("convolution backward-data", [&] {
    static Cache<BackwardData> cache;
    ConvShape s(dx->dimensions(), kernel.dimensions(), dy.dimensions(), stride, dilation, padding_low, padding_high,
                groups);
    const auto tdy = DataType(dy.element_type()), tw = DataType(kernel.element_type()),
               tdx = DataType(dx->element_type());
    auto& entry = cache.Get(Key("bwd_data", s.key(), int(tdy), int(tw), int(tdx)), [&] {
      auto hint = ForwardPd(s, tdx, tw, tdy, std::nullopt, false);
      convolution_backward_data::primitive_desc pd(Engine(), dnnl::algorithm::convolution_direct, s.src(tdx),
                                                   s.any_weights(tw), s.dst(tdy), s.strides, s.dilates, s.pad_l,
                                                   s.pad_r, hint);
      return std::unique_ptr<BackwardData>(new BackwardData{convolution_backward_data(pd),
                                                            WeightReorder(s.hwio(tw), pd.weights_desc(), WeightReorder::Direction::kIn),
                                                            pd.diff_src_desc(), pd.diff_dst_desc()});
    });
    entry.primitive.execute(Stream(), {
        {DNNL_ARG_DIFF_DST, Wrap(entry.diff_dst, dy.untyped_data())},
        {DNNL_ARG_WEIGHTS, entry.weights.In(kernel.untyped_data())},
        {DNNL_ARG_DIFF_SRC, Wrap(entry.diff_src, dx->untyped_data())},
    });
    Stream().wait();
  });
}

// Results: the weight gradient, and the bias gradient when a second result is asked for.
ffi::Error ConvBackwardWeightsImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                                   ffi::RemainingRets rest, ffi::Span<const int64_t> stride,
                                   ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> padding_low,
                                   ffi::Span<const int64_t> padding_high, int64_t groups) {
  return Guarded("convolution backward-weights", [&] {
    static Cache<BackwardWeights> cache;
    ConvShape s(x.dimensions(), dw->dimensions(), dy.dimensions(), stride, dilation, padding_low, padding_high,
                groups);
    std::optional<ffi::Result<ffi::AnyBuffer>> db;
    if (rest.size() == 1) db = rest.get<ffi::AnyBuffer>(0).value();
    const auto tx = DataType(x.element_type()), tdy = DataType(dy.element_type()),
               tdw = DataType(dw->element_type());
    std::optional<memory::data_type> tdb;
    if (db) tdb = DataType((*db)->element_type());
    auto& entry = cache.Get(Key("bwd_weights", s.key(), int(tx), int(tdy), int(tdw), tdb ? int(*tdb) : -1), [&] {
      auto hint = ForwardPd(s, tx, tdw, tdy, tdb, false);
      auto bias_desc = tdb ? memory::desc({s.o}, *tdb, memory::format_tag::a) : memory::desc();
      convolution_backward_weights::primitive_desc pd(Engine(), dnnl::algorithm::convolution_direct, s.src(tx),
                                                      s.any_weights(tdw), bias_desc, s.dst(tdy), s.strides,
                                                      s.dilates, s.pad_l, s.pad_r, hint);
      return std::unique_ptr<BackwardWeights>(new BackwardWeights{
          convolution_backward_weights(pd), WeightReorder(s.hwio(tdw), pd.diff_weights_desc(), WeightReorder::Direction::kOut), pd.src_desc(),
          pd.diff_dst_desc(), tdb ? pd.diff_bias_desc() : memory::desc()});
    });
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, Wrap(entry.src, x.untyped_data())},
        {DNNL_ARG_DIFF_DST, Wrap(entry.diff_dst, dy.untyped_data())},
        {DNNL_ARG_DIFF_WEIGHTS, entry.diff_weights.Out(dw->untyped_data())},
    };
    if (db) args[DNNL_ARG_DIFF_BIAS] = Wrap(entry.diff_bias, (*db)->untyped_data());
    entry.primitive.execute(Stream(), args);
    entry.diff_weights.Finish(dw->untyped_data());
    Stream().wait();
  });
}

}  // namespace
}  // namespace cnnexp

namespace ffi = xla::ffi;

// The attributes every convolution handler takes after its buffers (cnnexp.kernels.conv's
// ConvGeometry.attributes()).
template <typename Binding>
auto WithGeometry(Binding binding) {
  return std::move(binding).template Attr<ffi::Span<const int64_t>>("stride")
      .template Attr<ffi::Span<const int64_t>>("dilation")
      .template Attr<ffi::Span<const int64_t>>("padding_low")
      .template Attr<ffi::Span<const int64_t>>("padding_high")
      .template Attr<int64_t>("groups");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_conv_forward, cnnexp::ConvForwardImpl,
                              WithGeometry(ffi::Ffi::Bind()
                                               .Arg<ffi::AnyBuffer>()
                                               .Arg<ffi::AnyBuffer>()
                                               .RemainingArgs()
                                               .Ret<ffi::AnyBuffer>())
                                  .Attr<int64_t>("relu"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_conv_backward_data, cnnexp::ConvBackwardDataImpl,
                              WithGeometry(ffi::Ffi::Bind()
                                               .Arg<ffi::AnyBuffer>()
                                               .Arg<ffi::AnyBuffer>()
                                               .Ret<ffi::AnyBuffer>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_conv_backward_weights, cnnexp::ConvBackwardWeightsImpl,
                              WithGeometry(ffi::Ffi::Bind()
                                               .Arg<ffi::AnyBuffer>()
                                               .Arg<ffi::AnyBuffer>()
                                               .Ret<ffi::AnyBuffer>()
                                               .RemainingRets()));

// 1 when oneDNN has optimized (not reference) bfloat16 kernels for all three convolution passes
// on this CPU (AVX-512 or newer), else 0; the Python side then keeps bfloat16 layers on XLA.
extern "C" int64_t cnnexp_supports_bf16() {
  bool optimized = false;
  try {
    cnnexp::RunOnOneDnnThread([&] {
      using cnnexp::memory;
      const auto bf16 = memory::data_type::bf16;
      const int64_t input[] = {2, 8, 8, 16}, kernel[] = {3, 3, 16, 16}, ones[] = {1, 1};
      const ffi::Span<const int64_t> unit(ones, 2);
      cnnexp::ConvShape s(ffi::AnyBuffer::Dimensions(input, 4), ffi::AnyBuffer::Dimensions(kernel, 4),
                          ffi::AnyBuffer::Dimensions(input, 4), unit, unit, unit, unit, 1);
      auto forward = cnnexp::ForwardPd(s, bf16, bf16, bf16, std::nullopt, false);
      dnnl::convolution_backward_data::primitive_desc data(
          cnnexp::Engine(), dnnl::algorithm::convolution_direct, s.src(bf16), s.any_weights(bf16), s.dst(bf16),
          s.strides, s.dilates, s.pad_l, s.pad_r, forward);
      dnnl::convolution_backward_weights::primitive_desc weights(
          cnnexp::Engine(), dnnl::algorithm::convolution_direct, s.src(bf16), s.any_weights(bf16), s.dst(bf16),
          s.strides, s.dilates, s.pad_l, s.pad_r, forward);
      optimized = true;
      for (const char* impl : {forward.impl_info_str(), data.impl_info_str(), weights.impl_info_str()})
        if (std::string(impl).rfind("ref", 0) == 0) optimized = false;
    });
  } catch (const std::exception&) {
    return 0;
  }
  return optimized ? 1 : 0;
}
