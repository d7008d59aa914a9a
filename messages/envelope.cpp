#include "messages/envelope.h"

#include <cstring>

namespace asteroid::messages {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::int64: return 8;
    case DType::float16: return 2;
  }
  return 0;
}

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::int64: return "int64";
    case DType::float16: return "float16";
  }
  return "?";
}

int64_t TensorBlob::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return shape.empty() && bytes == 0 ? 0 : n;
}

TensorBlob TensorBlob::copy_of(DType dtype, std::vector<int64_t> shape, const void* data, size_t size) {
  auto storage = std::make_shared<std::vector<char>>(size);
  if (size > 0) std::memcpy(storage->data(), data, size);
  TensorBlob blob;
  blob.dtype = dtype;
  blob.shape = std::move(shape);
  blob.data = storage->data();
  blob.bytes = size;
  blob.owner = std::move(storage);
  return blob;
}

const char* to_string(TraceKind kind) {
  switch (kind) {
    case TraceKind::forward: return "forward";
    case TraceKind::backward: return "backward";
    case TraceKind::send: return "send";
    case TraceKind::receive: return "receive";
    case TraceKind::all_reduce: return "all-reduce";
    case TraceKind::optimizer_step: return "optimizer-step";
    case TraceKind::idle: return "idle";
  }
  return "?";
}

const char* to_string(ErrorCode code) {
  switch (code) {
    case ErrorCode::invalid_message: return "invalid message";
    case ErrorCode::invalid_request: return "invalid request";
    case ErrorCode::out_of_memory: return "out of memory";
    case ErrorCode::internal: return "internal error";
    case ErrorCode::disconnected: return "disconnected";
  }
  return "?";
}

const char* kind_name(const Message& message) {
  static const char* const names[] = {"activation", "gradient",  "reduceChunk", "assignment", "stageState",
                                      "control",    "heartbeat", "nodeInfo",    "metrics",    "error",
                                      "profileRequest", "profileResult", "hello", "stateRequest", "planRequest", "planResult", "linkProbe", "replicaRequest", "peers"};
  static_assert(sizeof(names) / sizeof(names[0]) == std::variant_size_v<Message>);
  return names[message.index()];
}

}  // namespace asteroid::messages
