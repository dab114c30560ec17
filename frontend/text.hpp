#pragma once
/// Text corpora for language models, with the course's (and PyTorch's
/// word_language_model's) semantics:
///
///     data::Corpus corpus("data/ptb");                          // train/valid/test.txt
///     NDArray train = data::batchify(corpus.train, 20);         // [nbatch, 20] int64 columns
///     for (int64_t i : data::batch_starts(train, 35)) {
///       data::TextBatch b = data::get_batch(train, i, 35);      // data [35, 20], target [700]
///       ...
///     }
///
/// The Penn Treebank format: one sentence per line, tokens separated by
/// whitespace, "<eos>" appended at the end of every line, rare words already
/// replaced by "<unk>" in the text. Real text comes from Debian's `fortunes`
/// package: fortunes_to_ptb() turns its files into such a corpus
/// deterministically (see its comment and the README).

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/ndarray.hpp"

namespace loom::data {

/// Word <-> id, ids in order of first appearance.
class Dictionary {
 public:
  /// The id of `word`, added when new.
  int64_t add_word(const std::string& word);
  /// The id of `word`, or -1 when it is not in the dictionary.
  int64_t find(const std::string& word) const;
  /// The id of `word`; throws loom::Error naming it when it is unknown.
  int64_t id(const std::string& word) const;
  /// The word of `id`; throws loom::Error when id is out of range.
  const std::string& word(int64_t id) const;
  int64_t size() const { return int64_t(words_.size()); }
  const std::vector<std::string>& words() const { return words_; }

 private:
  std::unordered_map<std::string, int64_t> ids_;
  std::vector<std::string> words_;
};

struct CorpusOptions {
  /// Read at most this many lines of each file (0: all), as the course's max_lines.
  int64_t max_lines = 0;
};

/// A PTB-format corpus in `dir`: train.txt, valid.txt and test.txt (or
/// ptb.train.txt, ...), read in that order into one dictionary. A missing,
/// unreadable or empty file throws loom::Error naming it.
class Corpus {
 public:
  explicit Corpus(const std::string& dir, CorpusOptions options = {});
  Dictionary dictionary;
  std::vector<int64_t> train, valid, test;
  /// Adds the words of one PTB-format file to the dictionary and returns its
  /// ids: each line's whitespace-separated words, then "<eos>". Lines end at
  /// '\n' (so "\r\n" too), words at ASCII whitespace: PTB's files and
  /// fortunes read as Python's `line.split()` reads them; unlike Python, a
  /// lone '\r' separates words without ending a line, and non-ASCII spaces
  /// (U+00A0) do not separate words.
  std::vector<int64_t> tokenize(const std::string& path, int64_t max_lines = 0);
};

/// The path of split `name` ("train", "valid", "test") in a PTB directory:
/// dir/name.txt, else dir/ptb.name.txt; throws loom::Error when neither exists.
std::string ptb_file(const std::string& dir, const std::string& name);

/// Arranges ids into batch_size columns read top to bottom (the course's
/// batchify): [nbatch, batch_size] int64 with nbatch = ids.size() / batch_size;
/// the remainder is dropped. Throws when nbatch would be 0.
NDArray batchify(const std::vector<int64_t>& ids, int64_t batch_size);

struct TextBatch {
  NDArray data;    // [seq_len, batch] int64
  NDArray target;  // [seq_len * batch] int64: the next word of every data position
};

/// The course's get_batch: seq_len = min(bptt, rows - 1 - i); data = source
/// rows [i, i + seq_len), target = rows [i + 1, i + 1 + seq_len) flattened.
/// Throws loom::Error unless 0 <= i < rows - 1 and bptt > 0.
TextBatch get_batch(const NDArray& source, int64_t i, int64_t bptt);

/// The rows get_batch starts at, stepping by bptt: 0, bptt, ... < rows - 1.
/// Throws loom::Error when source has fewer than bptt + 1 rows (`what` names
/// the data in the message: "bptt 35 is longer than the valid split ...").
std::vector<int64_t> batch_starts(const NDArray& source, int64_t bptt, const std::string& what = "data");

// ---------------------------------------------------------------- fortunes -> PTB

/// Where Debian's `fortunes` package installs its files.
inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";

/// Splits text into lower-case tokens: words are runs of letters, digits and
/// non-ASCII bytes, joined across an apostrophe between two word characters
/// ("don't"); every other visible character is a token of its own, a run of
/// the same one a single token ("--", "..."); whitespace and control
/// characters separate tokens. Backspace overstriking ("_\bx") is removed.
std::vector<std::string> tokenize_text(std::string_view text);

/// The fortunes of every plain file in `dir` (no .dat index, no .u8 link), in
/// file-name order, each tokenized; empty entries are dropped.
std::vector<std::vector<std::string>> read_fortunes(const std::string& dir = kFortunesDir);

struct FortunesOptions {
  /// Words seen fewer times than this in the training split become "<unk>".
  int64_t min_count = 3;
};

struct CorpusSplitStats {
  int64_t entries = 0;
  int64_t tokens = 0;  // with one <eos> per entry
  int64_t unks = 0;    // tokens replaced by <unk>
};

struct FortunesStats {
  CorpusSplitStats train, valid, test;
  int64_t files = 0;
  int64_t vocab = 0;  // distinct tokens of the written corpus, <unk> and <eos> included
};

/// Writes a PTB-format corpus (train.txt, valid.txt, test.txt, each written
/// atomically) made from the fortunes in `src_dir`: read_fortunes(), a
/// fixed 90/5/5 split by entry (entry k goes to valid when k % 20 == 18, to
/// test when k % 20 == 19, else to train), words rarer than min_count in
/// train replaced by <unk>, one entry per line. Deterministic: the same
/// files give the same bytes.
FortunesStats fortunes_to_ptb(const std::string& src_dir, const std::string& out_dir, FortunesOptions options = {});

}  // namespace loom::data
