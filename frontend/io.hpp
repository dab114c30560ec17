#pragma once
// File helpers shared by the data readers and checkpoints (internal to frontend/).

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace loom::io {

/// The whole file; throws loom::Error naming the file when it cannot be read.
std::vector<uint8_t> read_file(const std::string& path);

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory, flushed to disk, then renamed over `path`. On any error the
/// temporary is removed, `path` is untouched, and loom::Error names the file.
void write_file_atomically(const std::string& path, std::string_view bytes);

/// True when the bytes start with the gzip magic (1f 8b).
bool is_gzip(const std::vector<uint8_t>& bytes);

/// Decompresses a gzip file's bytes (all members). `limit(out)` is asked after
/// each chunk for the largest size the output may have (e.g. once a header is
/// readable); exceeding it throws. Truncated or corrupt data throw loom::Error
/// naming `path`.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path,
                            const std::function<size_t(const std::vector<uint8_t>& out)>& limit = {});

/// gzip-compresses bytes (for writing test files and tools).
std::vector<uint8_t> gzip(std::string_view bytes);

}  // namespace loom::io
