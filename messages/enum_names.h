// Name <-> enum conversion, from one table per enum, for every enum the
// project names on its command lines and in its files (codecs, optimizers,
// strategies, wire policies, recovery modes). Header-only, no dependencies.
//
//   constexpr Named<Codec> kCodecNames[] = {{Codec::fp32, "fp32"}, ...};
//   name_of(kCodecNames, Codec::int8)          -> "int8"
//   find_named(kCodecNames, "int8")            -> Codec::int8 (nullopt if unknown)
//   parse_named(kCodecNames, "x", "codec")     -> throws std::invalid_argument:
//       unknown codec "x" (expected fp32, fp16, bf16, int8 or int4)
#pragma once

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace asteroid {

template <typename E>
struct Named {
  E value;
  const char* name;
};

// The table's name of `value`, or "unknown" when it has none.
template <typename E, size_t N>
const char* name_of(const Named<E> (&table)[N], E value) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return "unknown";
}

template <typename E, size_t N>
std::optional<E> find_named(const Named<E> (&table)[N], std::string_view name) {
  for (const auto& entry : table) {
    if (name == entry.name) return entry.value;
  }
  return std::nullopt;
}

// "a, b or c": the names of the table, for messages.
template <typename E, size_t N>
std::string names_of(const Named<E> (&table)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += table[i].name;
  }
  return out;
}

// The value named `name`; throws std::invalid_argument naming it, `what` it
// should have been and the known names.
template <typename E, size_t N>
E parse_named(const Named<E> (&table)[N], std::string_view name, const char* what) {
  if (auto value = find_named(table, name)) return *value;
  throw std::invalid_argument("unknown " + std::string(what) + " \"" + std::string(name) + "\" (expected " +
                              names_of(table) + ")");
}

}  // namespace asteroid
