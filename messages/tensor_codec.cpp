#include "messages/tensor_codec.h"

#include <ATen/Functions.h>

#include <stdexcept>

namespace asteroid::messages {
namespace {

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::float32;
    case at::kLong: return DType::int64;
    case at::kHalf: return DType::float16;
    default: throw std::invalid_argument(std::string("cannot send a tensor of type ") + at::toString(t.scalar_type()));
  }
}

at::ScalarType scalar_type_of(DType dtype) {
  switch (dtype) {
    case DType::float32: return at::kFloat;
    case DType::int64: return at::kLong;
    case DType::float16: return at::kHalf;
    default: break;
  }
  throw std::invalid_argument(std::string("a ") + to_string(dtype) + " blob has no tensor type: decode it");
}

}  // namespace

TensorBlob to_blob(const at::Tensor& tensor) {
  TensorBlob blob;
  if (!tensor.defined()) return blob;
  at::Tensor t = tensor.contiguous();
  blob.dtype = dtype_of(t);
  blob.shape.assign(t.sizes().begin(), t.sizes().end());
  blob.data = static_cast<const char*>(t.data_ptr());
  blob.bytes = t.numel() * t.element_size();
  blob.owner = std::make_shared<at::Tensor>(std::move(t));
  return blob;
}

at::Tensor to_tensor(const TensorBlob& blob) {
  if (blob.empty()) return {};
  auto owner = blob.owner;
  return at::from_blob(const_cast<char*>(blob.data), blob.shape, [owner](void*) mutable { owner.reset(); },
                       at::TensorOptions().dtype(scalar_type_of(blob.dtype)));
}

TensorBlob to_blob(const at::Tensor& tensor, wire_codec::Codec codec, uint32_t block) {
  if (codec == wire_codec::Codec::fp32 || !tensor.defined()) return to_blob(tensor);
  if (tensor.scalar_type() != at::kFloat) throw std::invalid_argument("only float32 tensors are wire-encoded");
  at::Tensor t = tensor.contiguous();
  const uint64_t rows = t.dim() >= 2 ? static_cast<uint64_t>(t.size(0)) : 1;
  const uint64_t length = rows == 0 ? 0 : static_cast<uint64_t>(t.numel()) / rows;
  return to_blob(wire_codec::encode(codec, t.data_ptr<float>(), rows, length, block),
                 std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
}

TensorBlob to_blob(wire_codec::Encoded encoded, std::vector<int64_t> shape) {
  auto owner = std::make_shared<wire_codec::Encoded>(std::move(encoded));
  TensorBlob blob;
  blob.dtype = dtype_of(owner->codec);
  blob.shape = std::move(shape);
  blob.data = reinterpret_cast<const char*>(owner->data.data());
  blob.bytes = owner->data.size();
  if (wire_codec::has_scales(owner->codec)) {
    blob.block = owner->block;
    blob.scales = reinterpret_cast<const char*>(owner->scales.data());
    blob.scale_bytes = owner->scales.size() * sizeof(float);
  }
  blob.owner = std::move(owner);
  return blob;
}

at::Tensor to_float_tensor(const TensorBlob& blob) {
  if (blob.empty() || blob.dtype == DType::float32) return to_tensor(blob);
  if (!codec_of(blob.dtype)) throw std::invalid_argument(std::string("a ") + to_string(blob.dtype) + " blob is not float");
  at::Tensor out = at::empty(blob.shape, at::TensorOptions().dtype(at::kFloat));
  wire_codec::decode(blob.codec_view(), out.data_ptr<float>());
  return out;
}

}  // namespace asteroid::messages
