// Batch normalization in training mode, forward and backward, as XLA FFI handlers: statistics
// over every axis but the channels (the last) of NHWC or NC tensors, a learned scale and shift
// per channel. XLA:CPU spent about a third of a ResNet training step here (reductions and the
// elementwise passes of their gradient); oneDNN does each direction in one primitive.
// Evaluation (running averages) stays in XLA, where it fuses with what follows.
#include <stdexcept>

#include "common.h"

namespace cnnexp {
namespace {

using dnnl::batch_normalization_backward;
using dnnl::batch_normalization_forward;

const auto kFlags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;

// NHWC as (N, C, H, W) in nhwc layout; NC as it is.
memory::desc Activations(ffi::AnyBuffer::Dimensions dims, memory::data_type type) {
  if (dims.size() == 4) return Nhwc(dims, type);
  if (dims.size() == 2) return memory::desc({dims[0], dims[1]}, type, memory::format_tag::nc);
  throw std::invalid_argument("batch normalization takes NHWC or NC tensors");
}

batch_normalization_forward::primitive_desc ForwardPd(const memory::desc& data, float epsilon) {
  return batch_normalization_forward::primitive_desc(Engine(), dnnl::prop_kind::forward_training, data, data,
                                                     epsilon, kFlags);
}

struct Forward {
  batch_normalization_forward primitive;
  memory::desc data, stats;
};

struct Backward {
  batch_normalization_backward primitive;
  memory::desc data, stats;
};

std::string ShapeKey(ffi::AnyBuffer::Dimensions dims, memory::data_type type, float epsilon) {
  std::ostringstream key;
  for (auto d : dims) key << d << ',';
  key << '|' << int(type) << '|' << epsilon;
  return key.str();
}

void CheckStats(const ffi::AnyBuffer& buffer, ffi::AnyBuffer::Dimensions data, const char* name) {
  if (buffer.element_type() != ffi::DataType::F32 || buffer.dimensions().size() != 1 ||
      buffer.dimensions()[0] != data[data.size() - 1])
    throw std::invalid_argument(std::string(name) + " must be float32 with one value per channel");
}

// Results: the normalized tensor, and the batch's mean and (biased) variance per channel.
ffi::Error BatchNormForwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift,
                                ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> mean,
                                ffi::Result<ffi::AnyBuffer> variance, float epsilon) {
  return Guarded("batch normalization forward", [&] {
    static Cache<Forward> cache;
    for (auto* b : {&scale, &shift}) CheckStats(*b, x.dimensions(), "scale and shift");
    const auto type = DataType(x.element_type());
    auto& entry = cache.Get(ShapeKey(x.dimensions(), type, epsilon), [&] {
      auto pd = ForwardPd(Activations(x.dimensions(), type), epsilon);
      return std::unique_ptr<Forward>(new Forward{batch_normalization_forward(pd), pd.src_desc(), pd.mean_desc()});
    });
    entry.primitive.execute(Stream(), {
        {DNNL_ARG_SRC, Wrap(entry.data, x.untyped_data())},
        {DNNL_ARG_SCALE, Wrap(entry.stats, scale.untyped_data())},
        {DNNL_ARG_SHIFT, Wrap(entry.stats, shift.untyped_data())},
        {DNNL_ARG_DST, Wrap(entry.data, y->untyped_data())},
        {DNNL_ARG_MEAN, Wrap(entry.stats, mean->untyped_data())},
        {DNNL_ARG_VARIANCE, Wrap(entry.stats, variance->untyped_data())},
    });
    Stream().wait();
  });
}

// Results: the input gradient and the gradients of the scale and the shift.
ffi::Error BatchNormBackwardImpl(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::AnyBuffer scale, ffi::AnyBuffer mean,
                                 ffi::AnyBuffer variance, ffi::Result<ffi::AnyBuffer> dx,
                                 ffi::Result<ffi::AnyBuffer> dscale, ffi::Result<ffi::AnyBuffer> dshift,
                                 float epsilon) {
  return Guarded("batch normalization backward", [&] {
    static Cache<Backward> cache;
    for (auto* b : {&scale, &mean, &variance}) CheckStats(*b, x.dimensions(), "scale, mean and variance");
    const auto type = DataType(x.element_type());
    if (DataType(dy.element_type()) != type) throw std::invalid_argument("gradient and input types differ");
    auto& entry = cache.Get(ShapeKey(x.dimensions(), type, epsilon), [&] {
      const auto data = Activations(x.dimensions(), type);
      batch_normalization_backward::primitive_desc pd(Engine(), dnnl::prop_kind::backward, data, data, data, epsilon,
                                                      kFlags, ForwardPd(data, epsilon));
      return std::unique_ptr<Backward>(new Backward{batch_normalization_backward(pd), pd.src_desc(), pd.mean_desc()});
    });
    entry.primitive.execute(Stream(), {
        {DNNL_ARG_SRC, Wrap(entry.data, x.untyped_data())},
        {DNNL_ARG_DIFF_DST, Wrap(entry.data, dy.untyped_data())},
        {DNNL_ARG_SCALE, Wrap(entry.stats, scale.untyped_data())},
        {DNNL_ARG_MEAN, Wrap(entry.stats, mean.untyped_data())},
        {DNNL_ARG_VARIANCE, Wrap(entry.stats, variance.untyped_data())},
        {DNNL_ARG_DIFF_SRC, Wrap(entry.data, dx->untyped_data())},
        {DNNL_ARG_DIFF_SCALE, Wrap(entry.stats, dscale->untyped_data())},
        {DNNL_ARG_DIFF_SHIFT, Wrap(entry.stats, dshift->untyped_data())},
    });
    Stream().wait();
  });
}

}  // namespace
}  // namespace cnnexp

namespace ffi = xla::ffi;

using Buffer = ffi::AnyBuffer;

// Arguments x, scale, shift; results y, mean, variance.
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_batch_norm_forward, cnnexp::BatchNormForwardImpl,
                              ffi::Ffi::Bind().Arg<Buffer>().Arg<Buffer>().Arg<Buffer>()
                                  .Ret<Buffer>().Ret<Buffer>().Ret<Buffer>().Attr<float>("epsilon"));

// Arguments x, dy, scale, mean, variance; results dx, dscale, dshift.
XLA_FFI_DEFINE_HANDLER_SYMBOL(cnnexp_batch_norm_backward, cnnexp::BatchNormBackwardImpl,
                              ffi::Ffi::Bind().Arg<Buffer>().Arg<Buffer>().Arg<Buffer>().Arg<Buffer>().Arg<Buffer>()
                                  .Ret<Buffer>().Ret<Buffer>().Ret<Buffer>().Attr<float>("epsilon"));
