#pragma once
// gzip helpers shared by the data readers (internal to frontend/); files are
// read and written through core/file.hpp.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/file.hpp"  // read_file, write_file_atomically, guard_memory
#include "core/ndarray.hpp"

namespace loom::io {

/// True when the bytes start with the gzip magic (1f 8b).
bool is_gzip(const std::vector<uint8_t>& bytes);

/// Decompresses a gzip file's bytes (all members). `limit(out)` is asked after
/// each chunk for the largest size the output may have (e.g. once a header is
/// readable); exceeding it throws, and the output is allocated once at that size. Truncated or corrupt data throw loom::Error
/// naming `path`.
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const std::string& path,
                            const std::function<size_t(const std::vector<uint8_t>& out)>& limit = {});

/// A host array for data read from `path`; when memory runs out, the
/// loom::Error names the file and what it declared.
NDArray new_array(const Shape& shape, DType dtype, const std::string& path);

/// gzip-compresses bytes (for writing test files and tools).
std::vector<uint8_t> gzip(std::string_view bytes);

}  // namespace loom::io
