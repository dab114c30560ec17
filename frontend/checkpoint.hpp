#pragma once
/// Checkpoints: a session's variables (parameters, running statistics,
/// optimizer state) in the safetensors format, readable by Python tools
/// (`safetensors.numpy.load_file`, or json + numpy).
///
///     checkpoint::save(session, "model.safetensors");   // every variable of the graph
///     checkpoint::load(session, "model.safetensors");   // checks names, shapes, dtypes
///
/// Files are written atomically (temporary file + rename), so a crash never
/// leaves a half-written checkpoint. Loading validates everything before
/// changing anything: a mismatch throws loom::Error naming the file and the
/// variable, and the session keeps its values.

#include <map>
#include <string>
#include <vector>

#include "core/session.hpp"

namespace loom::checkpoint {

/// Free-form string metadata stored in the file header ("__metadata__").
using Metadata = std::map<std::string, std::string>;

/// Writes named arrays (host or device) to a safetensors file. Names must be
/// unique and non-empty; dtypes map to F32, F64, I32, I64, U8, BOOL.
void write(const std::string& path, const std::vector<std::pair<std::string, NDArray>>& tensors,
           const Metadata& metadata = {});

/// Every tensor of a safetensors file, by name; throws loom::Error naming the
/// file on a malformed header, overlapping or out-of-range data, or a dtype
/// loom does not have (F16, BF16, ...).
std::map<std::string, NDArray> read(const std::string& path);
/// The file's metadata only.
Metadata read_metadata(const std::string& path);

/// Saves the given variables of the session's graph (all when empty), by
/// variable name.
void save(Session& session, const std::string& path, const std::vector<Tensor>& variables = {},
          const Metadata& metadata = {});

struct LoadOptions {
  /// Variables that the file lacks keep their values instead of failing.
  bool allow_missing = false;
  /// Tensors of the file that are not among the variables are ignored instead of failing.
  bool allow_unexpected = false;
};

/// Loads the given variables (all of the graph when empty) from the file:
/// every one must be present (by name) with the same shape and dtype, and by
/// default the file must hold nothing else. Returns the file's metadata.
Metadata load(Session& session, const std::string& path, const std::vector<Tensor>& variables = {},
              const LoadOptions& options = {});

}  // namespace loom::checkpoint
