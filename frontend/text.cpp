// Text corpora: the PTB-format reader, batchify/get_batch, and the
// deterministic conversion of Debian's fortunes into a PTB-format corpus.

#include "frontend/text.hpp"

#include <algorithm>
#include <filesystem>
#include <map>

#include "core/error.hpp"
#include "frontend/io.hpp"

namespace loom::data {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- Dictionary

int64_t Dictionary::add_word(const std::string& word) {
  auto [it, added] = ids_.try_emplace(word, int64_t(words_.size()));
  if (added) words_.push_back(word);
  return it->second;
}

int64_t Dictionary::find(const std::string& word) const {
  auto it = ids_.find(word);
  return it == ids_.end() ? -1 : it->second;
}

int64_t Dictionary::id(const std::string& word) const {
  int64_t i = find(word);
  LOOM_CHECK(i >= 0, "Dictionary: unknown word '", word, "' (", size(), " words)");
  return i;
}

const std::string& Dictionary::word(int64_t id) const {
  LOOM_CHECK(id >= 0 && id < size(), "Dictionary: id ", id, " out of range [0, ", size(), ")");
  return words_[size_t(id)];
}

// ---------------------------------------------------------------- Corpus

namespace {

bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

std::string ptb_file(const std::string& dir, const std::string& name) {
  std::error_code ec;  // the error_code forms: a name too long is a loom::Error, not a filesystem_error
  LOOM_CHECK(fs::is_directory(dir, ec), "corpus directory '", dir, "' does not exist or is not a directory",
             ec ? " (" + ec.message() + ")" : "");
  for (const std::string& f : {name + ".txt", "ptb." + name + ".txt"}) {
    fs::path p = fs::path(dir) / f;
    if (fs::exists(p, ec)) return p.string();
  }
  fail("corpus file '", (fs::path(dir) / (name + ".txt")).string(), "' not found (nor ptb.", name, ".txt)");
}

std::vector<int64_t> Corpus::tokenize(const std::string& path, int64_t max_lines) {
  LOOM_CHECK(max_lines >= 0, "Corpus: max_lines must be >= 0, got ", max_lines);
  const std::vector<uint8_t> bytes = io::read_file(path);
  std::vector<int64_t> ids;
  int64_t lines = 0, words = 0;
  size_t pos = 0;
  // Lines as Python iterates a file: a final line without '\n' counts, the
  // empty string after a final '\n' does not.
  while (pos < bytes.size() && (max_lines == 0 || lines < max_lines)) {
    size_t end = pos;
    while (end < bytes.size() && bytes[end] != '\n') ++end;
    for (size_t i = pos; i < end;) {
      while (i < end && is_space(bytes[i])) ++i;
      size_t j = i;
      while (j < end && !is_space(bytes[j])) ++j;
      if (j > i) {
        ids.push_back(dictionary.add_word(std::string(reinterpret_cast<const char*>(bytes.data()) + i, j - i)));
        ++words;
      }
      i = j;
    }
    ids.push_back(dictionary.add_word("<eos>"));
    ++lines;
    pos = end + 1;
  }
  LOOM_CHECK(words > 0, "corpus file '", path, "' is empty (", lines, " lines, no words)");
  return ids;
}

Corpus::Corpus(const std::string& dir, CorpusOptions options) {
  train = tokenize(ptb_file(dir, "train"), options.max_lines);
  valid = tokenize(ptb_file(dir, "valid"), options.max_lines);
  test = tokenize(ptb_file(dir, "test"), options.max_lines);
}

// ---------------------------------------------------------------- batches

NDArray batchify(const std::vector<int64_t>& ids, int64_t batch_size) {
  LOOM_CHECK(batch_size > 0, "batchify: batch_size must be positive, got ", batch_size);
  const int64_t nbatch = int64_t(ids.size()) / batch_size;
  LOOM_CHECK(nbatch > 0, "batchify: ", ids.size(), " tokens are fewer than one column of batch size ", batch_size);
  NDArray out = NDArray::empty({nbatch, batch_size}, int64);
  int64_t* p = out.data<int64_t>();
  // Column b holds ids[b * nbatch, (b + 1) * nbatch).
  for (int64_t r = 0; r < nbatch; ++r)
    for (int64_t b = 0; b < batch_size; ++b) p[r * batch_size + b] = ids[size_t(b * nbatch + r)];
  return out;
}

static void check_source(const char* what, const NDArray& source) {
  LOOM_CHECK(source.ndim() == 2 && source.dtype() == int64, what, ": source must be int64 [rows, batch] (from batchify), got ",
             dtype_name(source.dtype()), S(source.shape()));
}

TextBatch get_batch(const NDArray& source, int64_t i, int64_t bptt) {
  check_source("get_batch", source);
  const int64_t rows = source.shape()[0], batch = source.shape()[1];
  LOOM_CHECK(bptt > 0, "get_batch: bptt must be positive, got ", bptt);
  LOOM_CHECK(i >= 0 && i < rows - 1, "get_batch: start row ", i, " out of range: ", rows,
             " rows leave starts [0, ", rows - 1, ") with a next word to predict");
  const int64_t len = std::min(bptt, rows - 1 - i);
  TextBatch b;
  b.data = source.slice({{i, i + len, 1}}).compact();
  b.target = source.slice({{i + 1, i + 1 + len, 1}}).compact().reshape({len * batch});
  return b;
}

std::vector<int64_t> batch_starts(const NDArray& source, int64_t bptt, const std::string& what) {
  check_source("batch_starts", source);
  LOOM_CHECK(bptt > 0, "batch_starts: bptt must be positive, got ", bptt);
  const int64_t rows = source.shape()[0];
  LOOM_CHECK(rows - 1 >= bptt, "bptt ", bptt, " is longer than the ", what, ": ", rows, " rows of batch ",
             source.shape()[1], " hold ", rows - 1, " steps with a next word (use a smaller --bptt or --batch)");
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < rows - 1; i += bptt) starts.push_back(i);
  return starts;
}

// ---------------------------------------------------------------- fortunes

namespace {

bool is_word_byte(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c >= 0x80; }

/// Removes backspace overstriking: a backspace erases the byte before it.
std::string strip_overstrike(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\b') {
      if (!out.empty()) out.pop_back();
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::vector<std::string> tokenize_text(std::string_view raw) {
  std::string text = strip_overstrike(raw);
  for (char& c : text)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  std::vector<std::string> out;
  const size_t n = text.size();
  auto at = [&](size_t i) { return uint8_t(text[i]); };
  for (size_t i = 0; i < n;) {
    const uint8_t c = at(i);
    if (c <= ' ' || c == 0x7f) {  // whitespace and control characters
      ++i;
      continue;
    }
    size_t j = i + 1;
    if (is_word_byte(c)) {
      while (j < n && (is_word_byte(at(j)) || (at(j) == '\'' && j + 1 < n && is_word_byte(at(j + 1))))) ++j;
    } else {
      while (j < n && at(j) == c) ++j;
    }
    out.emplace_back(text, i, j - i);
    i = j;
  }
  return out;
}

namespace {

/// The fortune files of `dir`, sorted: regular files, no index (.dat), no
/// .u8 link, nothing hidden.
std::vector<std::string> fortune_files(const std::string& dir) {
  std::error_code ec;
  LOOM_CHECK(fs::is_directory(dir, ec), "fortunes directory '", dir,
             "' not found (install Debian's fortunes package: apt-get install fortunes)");
  std::vector<std::string> files;
  for (fs::directory_iterator it(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& e = *it;
    const std::string name = e.path().filename().string();
    std::error_code kind;  // an entry that cannot be examined is not a fortune file
    if (!e.is_regular_file(kind) || e.is_symlink(kind) || name.empty() || name[0] == '.') continue;
    if (name.ends_with(".dat") || name.ends_with(".u8")) continue;
    files.push_back(e.path().string());
  }
  LOOM_CHECK(!ec, "fortunes directory '", dir, "': cannot list it: ", ec.message());
  std::sort(files.begin(), files.end());
  LOOM_CHECK(!files.empty(), "fortunes directory '", dir, "' holds no fortune files");
  return files;
}

}  // namespace

std::vector<std::vector<std::string>> read_fortunes(const std::string& dir) {
  const std::vector<std::string> files = fortune_files(dir);
  std::vector<std::vector<std::string>> entries;
  for (const std::string& f : files) {
    const std::vector<uint8_t> bytes = io::read_file(f);
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    std::string entry;
    auto flush = [&] {
      std::vector<std::string> t = tokenize_text(entry);
      if (!t.empty()) entries.push_back(std::move(t));
      entry.clear();
    };
    size_t pos = 0;
    while (pos <= text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string_view::npos) end = text.size();
      std::string_view line = text.substr(pos, end - pos);
      while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
      if (line == "%") {
        flush();
      } else {
        entry.append(line);
        entry.push_back('\n');
      }
      pos = end + 1;
    }
    flush();
  }
  return entries;
}

FortunesStats fortunes_to_ptb(const std::string& src_dir, const std::string& out_dir, FortunesOptions options) {
  LOOM_CHECK(options.min_count >= 1, "fortunes_to_ptb: min_count must be >= 1, got ", options.min_count);
  std::vector<std::vector<std::string>> entries = read_fortunes(src_dir);
  auto split_of = [](size_t k) { return k % 20 == 18 ? 1 : k % 20 == 19 ? 2 : 0; };
  std::unordered_map<std::string, int64_t> counts;
  for (size_t k = 0; k < entries.size(); ++k)
    if (split_of(k) == 0)
      for (const std::string& w : entries[k]) ++counts[w];

  FortunesStats stats;
  stats.files = int64_t(fortune_files(src_dir).size());
  CorpusSplitStats* split_stats[3] = {&stats.train, &stats.valid, &stats.test};
  std::string text[3];
  std::unordered_map<std::string, int64_t> vocab;
  for (size_t k = 0; k < entries.size(); ++k) {
    const int s = split_of(k);
    CorpusSplitStats& st = *split_stats[s];
    std::string& out = text[s];
    for (size_t i = 0; i < entries[k].size(); ++i) {
      const std::string& w = entries[k][i];
      auto it = counts.find(w);
      const bool known = it != counts.end() && it->second >= options.min_count;
      if (i) out.push_back(' ');
      out += known ? w : "<unk>";
      st.unks += !known;
      ++vocab[known ? w : "<unk>"];
    }
    out.push_back('\n');
    ++st.entries;
    st.tokens += int64_t(entries[k].size()) + 1;
  }
  stats.vocab = int64_t(vocab.size()) + 1;  // and <eos>
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  LOOM_CHECK(!ec, "fortunes_to_ptb: cannot create the output directory '", out_dir, "': ", ec.message());
  const char* names[3] = {"train.txt", "valid.txt", "test.txt"};
  for (int s = 0; s < 3; ++s) io::write_file_atomically((fs::path(out_dir) / names[s]).string(), text[s]);
  return stats;
}

}  // namespace loom::data
