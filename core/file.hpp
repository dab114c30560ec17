#pragma once
/// The one way loom opens, reads and writes files (checkpoints, data files,
/// traces, plan exports). Reading refuses anything but a regular file before
/// it can block (a FIFO, a device); writing is atomic and never replaces what
/// is not a regular file; every failure is a loom::Error naming the file.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.hpp"

namespace loom::io {

/// The whole file. Throws loom::Error naming the file when it cannot be
/// opened, is not a regular file, is larger than `max_bytes`, or memory runs out.
std::vector<uint8_t> read_file(const std::string& path, size_t max_bytes = SIZE_MAX);

/// Writes `bytes` to `path` atomically: a temporary file beside the target,
/// flushed to disk, then renamed over it, so readers see the old file or the
/// new one, never a part. A symlink is followed (its target is replaced, the
/// link stays); a target that exists but is not a regular file (a device, a
/// FIFO, a directory) is refused. Temporaries of the same target left by a
/// process that died mid-write are removed. On any error the temporary is
/// removed, `path` is untouched, and loom::Error names the file.
void write_file_atomically(const std::string& path, std::string_view bytes);

/// Throws the loom::Error write_file_atomically(path, ...) would for a target
/// that is not a regular file or a directory it cannot create files in (by
/// creating and removing its temporary), so that a program can refuse a bad
/// output path before hours of work rather than after.
void check_writable(const std::string& path);

/// The temporary-file name write_file_atomically uses for `target`.
std::string temporary_name(const std::string& target, long pid, uint64_t n);

/// Runs f(); running out of memory inside it (std::bad_alloc, std::length_error)
/// becomes a loom::Error naming `path`: a file's claims must never abort the process.
template <class F>
decltype(auto) guard_memory(const std::string& path, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    fail("'", path, "': out of memory while reading it (does its header declare absurd sizes?)");
  } catch (const std::length_error&) {
    fail("'", path, "': out of memory while reading it (does its header declare absurd sizes?)");
  }
}

}  // namespace loom::io
