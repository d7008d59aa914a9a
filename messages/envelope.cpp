#include "messages/envelope.h"

#include <chrono>
#include <cstring>

namespace asteroid::messages {

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::int64: return "int64";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
    case DType::int8_block: return "int8Block";
    case DType::int4_block: return "int4Block";
  }
  return "?";
}

std::optional<wire_codec::Codec> codec_of(DType dtype) {
  switch (dtype) {
    case DType::float32: return wire_codec::Codec::fp32;
    case DType::int64: return std::nullopt;
    case DType::float16: return wire_codec::Codec::fp16;
    case DType::bfloat16: return wire_codec::Codec::bf16;
    case DType::int8_block: return wire_codec::Codec::int8;
    case DType::int4_block: return wire_codec::Codec::int4;
  }
  return std::nullopt;
}

DType dtype_of(wire_codec::Codec codec) {
  switch (codec) {
    case wire_codec::Codec::fp32: return DType::float32;
    case wire_codec::Codec::fp16: return DType::float16;
    case wire_codec::Codec::bf16: return DType::bfloat16;
    case wire_codec::Codec::int8: return DType::int8_block;
    case wire_codec::Codec::int4: return DType::int4_block;
  }
  return DType::float32;
}

int64_t TensorBlob::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return shape.empty() && bytes == 0 ? 0 : n;
}

uint64_t TensorBlob::rows() const { return shape.size() >= 2 ? static_cast<uint64_t>(shape[0]) : 1; }

uint64_t TensorBlob::row_length() const {
  uint64_t n = 1;
  for (size_t i = shape.size() >= 2 ? 1 : 0; i < shape.size(); ++i) n *= static_cast<uint64_t>(shape[i]);
  return n;
}

wire_codec::EncodedView TensorBlob::codec_view() const {
  wire_codec::EncodedView view;
  view.codec = codec_of(dtype).value_or(wire_codec::Codec::fp32);
  view.block = block;
  view.rows = elements() == 0 ? 0 : rows();
  view.row_length = row_length();
  view.data = reinterpret_cast<const uint8_t*>(data);
  view.data_size = bytes;
  view.scales = reinterpret_cast<const uint8_t*>(scales);
  view.scales_size = scale_bytes;
  return view;
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

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* kind_name(const Message& message) {
  static const char* const names[] = {"activation", "gradient",  "reduceChunk", "assignment", "stageState",
                                      "control",    "heartbeat", "nodeInfo",    "metrics",    "error",
                                      "profileRequest", "profileResult", "hello", "stateRequest", "planRequest", "planResult", "linkProbe", "replicaRequest", "peers", "release", "keptRequest", "keptList", "modelFile"};
  static_assert(sizeof(names) / sizeof(names[0]) == std::variant_size_v<Message>);
  return names[message.index()];
}

}  // namespace asteroid::messages
