// Between at::Tensor and the TensorBlob of a message. to_blob shares the
// tensor's storage when it is contiguous (no copy until the codec writes the
// envelope); to_tensor shares the received buffer (no copy at all).
#pragma once

#include <ATen/core/Tensor.h>

#include "messages/envelope.h"

namespace asteroid::messages {

// REQUIRES: dtype float32, float16 or int64 on the CPU.
TensorBlob to_blob(const at::Tensor& tensor);
// An undefined tensor for an empty blob. The tensor keeps the blob's owner
// alive; it must not be written to (it may alias a received buffer).
// REQUIRES: dtype float32, float16 or int64.
at::Tensor to_tensor(const TensorBlob& blob);

// A float32 tensor encoded by the wire codec (wire_codec.h), one row per
// sample (shape[0]; one row for rank < 2). fp32 is to_blob(tensor).
TensorBlob to_blob(const at::Tensor& tensor, wire_codec::Codec codec, uint32_t block);
// A blob owning what the wire codec encoded, with the tensor's shape.
// REQUIRES: encoded.rows x encoded.row_length elements in `shape`.
TensorBlob to_blob(wire_codec::Encoded encoded, std::vector<int64_t> shape);
// The float32 values of a blob of any float dtype: float32 shares the
// buffer (read-only, as to_tensor), the others are decoded into a new tensor.
// REQUIRES: the blob passed the codec's validation (every decoded one did).
at::Tensor to_float_tensor(const TensorBlob& blob);

}  // namespace asteroid::messages
