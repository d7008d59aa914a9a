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
  }
  return at::kFloat;
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

}  // namespace asteroid::messages
