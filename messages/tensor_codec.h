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
at::Tensor to_tensor(const TensorBlob& blob);

}  // namespace asteroid::messages
