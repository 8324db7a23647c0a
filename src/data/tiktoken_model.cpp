// Loads a tiktoken BPE file (Meta's Llama 3 tokenizer.model): one line per
// token, "base64(token bytes) rank", ranks 0..n-1 being the ids. The file holds
// no pattern and no special tokens; they are Llama 3's, as Meta's code sets
// them: its pre-tokenizer regex, and 256 special tokens after the ranks named
// <|begin_of_text|>, <|end_of_text|>, <|reserved_special_token_0..3|>,
// <|start_header_id|>, <|end_header_id|>, <|reserved_special_token_4|>,
// <|eot_id|>, <|reserved_special_token_5..250|>. A tokenizer_config.json
// beside the file, if it has added_tokens_decoder, renames them (Llama 3.1).
//
// tiktoken merges the adjacent pair whose concatenation has the lowest rank;
// HF's converter turns that into a merge list sorted by (rank of the result,
// rank of the left part, rank of the right part), and we build the same list,
// so this file and the converted tokenizer.json give identical ids. (The two
// orders differ only when two different pairs of one piece make the same token.)
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <tuple>

#include "data/bpe_tokenizer.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

int base64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  size_t i = 0;
  for (; i < in.size() && in[i] != '='; ++i) {
    const int v = base64_value(static_cast<unsigned char>(in[i]));
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  for (; i < in.size(); ++i)
    if (in[i] != '=') return std::nullopt;
  return out;
}

std::vector<std::string> llama3_special_names() {
  std::vector<std::string> names = {"<|begin_of_text|>", "<|end_of_text|>",
                                    "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
                                    "<|reserved_special_token_2|>", "<|reserved_special_token_3|>",
                                    "<|start_header_id|>", "<|end_header_id|>",
                                    "<|reserved_special_token_4|>", "<|eot_id|>"};
  for (int i = 5; names.size() < 256; ++i)
    names.push_back("<|reserved_special_token_" + std::to_string(i) + "|>");
  return names;
}

}  // namespace

std::unique_ptr<BpeTokenizer> load_tiktoken_model(const std::string& path) {
  const std::string text = read_text_file(path);
  BpeSpec spec;
  spec.name = path;
  std::vector<int8_t> seen;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    auto where = [&] { return str("tokenizer '", path, "' line ", line_no, ": "); };
    if (space == std::string_view::npos)
      fail(where(), "expected \"base64-token rank\", found '", line.substr(0, 80),
           "' (is this a tiktoken BPE file? SentencePiece .model files are not supported)");
    auto bytes = base64_decode(line.substr(0, space));
    if (!bytes || bytes->empty()) fail(where(), "the token is not valid base64");
    const std::string_view rank_text = line.substr(space + 1);
    uint32_t rank = 0;
    if (rank_text.empty() || rank_text.size() > 9 ||
        rank_text.find_first_not_of("0123456789") != std::string_view::npos)
      fail(where(), "the rank '", rank_text, "' is not a non-negative integer");
    for (char c : rank_text) rank = rank * 10 + static_cast<uint32_t>(c - '0');
    // Ranks are dense (0..n-1); bounding them by the line count keeps a
    // malformed file from allocating gigabytes before it is refused.
    if (rank > 4 * (spec.vocab.size() + 1024))
      fail(where(), "rank ", rank, " is far beyond the ", spec.vocab.size(), " tokens read so far: ranks must be dense");
    if (rank >= seen.size()) seen.resize(size_t(rank) + 1, 0);
    if (seen[rank]) fail(where(), "rank ", rank, " appears twice");
    seen[rank] = 1;
    spec.vocab.emplace_back(std::move(*bytes), rank);
  }
  if (spec.vocab.empty()) fail("tokenizer '", path, "' has no tokens");
  const uint32_t n = static_cast<uint32_t>(seen.size());
  for (uint32_t r = 0; r < n; ++r)
    if (!seen[r]) fail("tokenizer '", path, "': rank ", r, " is missing (ranks must be 0..", n - 1, ")");

  // Every split of a token into two tokens is a merge, ordered as HF's converter orders them.
  {
    std::unordered_map<std::string_view, uint32_t> rank_of;
    rank_of.reserve(spec.vocab.size() * 2);
    for (const auto& [bytes, r] : spec.vocab) rank_of.emplace(bytes, r);
    std::vector<std::tuple<uint32_t, uint32_t, uint32_t>> merges;  // (result, left, right)
    for (const auto& [bytes, r] : spec.vocab) {
      const std::string_view t = bytes;
      for (size_t k = 1; k < t.size(); ++k) {
        auto l = rank_of.find(t.substr(0, k));
        if (l == rank_of.end()) continue;
        auto rr = rank_of.find(t.substr(k));
        if (rr == rank_of.end()) continue;
        merges.emplace_back(r, l->second, rr->second);
      }
    }
    std::sort(merges.begin(), merges.end());
    spec.merges.reserve(merges.size());
    for (const auto& [r, l, rr] : merges) spec.merges.emplace_back(l, rr);
  }

  std::vector<std::string> names = llama3_special_names();
  const std::string config =
      (std::filesystem::path(path).parent_path() / "tokenizer_config.json").string();
  if (path_exists(config)) {
    try {
      const auto j = nlohmann::json::parse(read_text_file(config));
      if (j.contains("added_tokens_decoder"))
        for (auto it = j["added_tokens_decoder"].begin(); it != j["added_tokens_decoder"].end(); ++it) {
          const long id = std::stol(it.key());
          if (id >= long(n) && id < long(n) + 256)
            names[size_t(id - n)] = it.value().at("content").get<std::string>();
        }
    } catch (const std::exception& e) {
      fail("tokenizer '", path, "': cannot read the special token names in '", config, "': ", e.what());
    }
  }
  for (uint32_t i = 0; i < names.size(); ++i) spec.added.push_back({n + i, names[i]});
  spec.pre_tokenizer = make_regex_pretokenizer(std::string(kLlama3Pattern));
  spec.ignore_merges = true;  // tiktoken takes a piece that is a token whole
  spec.bos = n;               // <|begin_of_text|>
  spec.eos = n + 1;           // <|end_of_text|>
  spec.bos_prefix = {n};
  return std::make_unique<BpeTokenizer>(std::move(spec));
}

}  // namespace intellect
