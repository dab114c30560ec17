#pragma once
// Fuzz targets: each takes arbitrary bytes and must return normally, whatever
// they hold (a loom::Error is a normal outcome; a crash, a sanitizer report,
// another exception or an "internal error" is a bug and aborts). The same
// functions run under libFuzzer (tests/fuzz/main.cpp, `./build.sh fuzz`) and,
// over the seed corpus in tests/fuzz/corpus/<target>/, in the test suite.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loom::fuzz {

/// An IDX file (raw or gzip) through data::read_idx.
int idx(const uint8_t* data, size_t size);
/// A safetensors file through checkpoint::read and read_metadata.
int safetensors(const uint8_t* data, size_t size);
/// A CIFAR-10 binary batch file through data::read_cifar10_batch: accepted
/// files give back their records byte for byte.
int cifar10(const uint8_t* data, size_t size);
/// Text through the language-model readers: as a PTB corpus's train split
/// (data::Corpus) and as a fortune file (read_fortunes, then fortunes_to_ptb,
/// whose corpus must read back with the token counts it reported).
int text(const uint8_t* data, size_t size);
/// A program that builds a graph from registered ops (random shapes, dtypes,
/// attributes derived from each op's examples), takes gradients, and runs what
/// was built in a session.
int graph(const uint8_t* data, size_t size);

struct Target {
  const char* name;
  int (*fn)(const uint8_t*, size_t);
};
inline constexpr Target kTargets[] = {
    {"idx", &idx}, {"safetensors", &safetensors}, {"cifar10", &cifar10}, {"text", &text}, {"graph", &graph}};

}  // namespace loom::fuzz
