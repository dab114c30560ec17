#pragma once
/// Checkpoints: a session's variables (parameters, running statistics,
/// optimizer state) in the safetensors format, readable by Python tools
/// (`safetensors.torch.load_file`, `safetensors.numpy.load_file`, or json + numpy).
///
///     checkpoint::save(session, "model.safetensors");   // every variable of the graph
///     checkpoint::load(session, "model.safetensors");   // checks names, shapes, dtypes
///     checkpoint::save(session, model, "model.safetensors");  // the model's state_dict
///
/// Names and layouts are PyTorch's, so weights move between loom and PyTorch
/// as they are: a variable "1/weight" is stored as "1.weight" (graph scopes
/// become dots), and loom's modules keep PyTorch's parameter layouts (a Linear
/// weight is [out, in]). A model's file is its state_dict:
/// `torch_model.load_state_dict(safetensors.torch.load_file(path))` reads it,
/// and checkpoint::load(session, model, path) reads one PyTorch wrote with
/// `safetensors.torch.save_file(torch_model.state_dict(), path)`.
///
/// Files of loom 0.1 ("1/weight" names, Linear weights stored [in, out]) still
/// load: their names are mapped and every 2-D "weight" tensor (with its
/// optimizer state) is transposed, which was exactly loom 0.1's Linear
/// weights. Saving again writes the current layout.
///
/// Files are written atomically (temporary file + rename), so a crash never
/// leaves a half-written checkpoint. Loading validates everything before
/// changing anything: a mismatch throws loom::Error naming the file and the
/// variable, and the session keeps its values.

#include <map>
#include <string>
#include <vector>

#include "core/session.hpp"

namespace loom::nn {
class Module;
}

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

/// The name a variable has in checkpoints: its graph name with scopes joined
/// by dots, as in a PyTorch state_dict ("2/0/fn/weight" -> "2.0.fn.weight").
std::string state_dict_name(const std::string& variable_name);

/// Saves the given variables of the session's graph (all when empty), by
/// state_dict_name(variable name). The metadata gets "format": "pt" (the
/// convention of safetensors.torch) unless it has a "format".
void save(Session& session, const std::string& path, const std::vector<Tensor>& variables = {},
          const Metadata& metadata = {});
/// Saves a module's state_dict: its parameters and buffers, named by module
/// path as PyTorch names them ("1.weight", whatever scope the model was built in).
void save(Session& session, const nn::Module& model, const std::string& path, const Metadata& metadata = {});

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
/// Loads a module's state_dict (a file save(session, model, ...) or PyTorch wrote;
/// from a loom 0.1 file, which also holds the optimizer state, the model's part).
Metadata load(Session& session, const nn::Module& model, const std::string& path, const LoadOptions& options = {});

// ---- Training checkpoints, kept the way PyTorch users keep them: the model's
// state_dict in `path` (PyTorch's load_state_dict reads it as is), and the rest
// of the graph's variables (optimizer state, step counters) beside it in
// optimizer_path(path), where PyTorch code never looks.

/// "m.safetensors" -> "m.optim.safetensors" (any other name: name + ".optim.safetensors").
std::string optimizer_path(const std::string& path);
/// Writes optimizer_path(path), then path; both carry the metadata (add the
/// epoch or step: loading checks that the two files agree on it).
void save_training(Session& session, const nn::Module& model, const std::string& path, const Metadata& metadata = {});
/// Loads both files of save_training (or one loom 0.1 checkpoint holding
/// everything); validates both before changing any variable. Returns the
/// model file's metadata.
Metadata load_training(Session& session, const nn::Module& model, const std::string& path);

}  // namespace loom::checkpoint
