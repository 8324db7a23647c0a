#include "data/tokenizer.h"

#include <atomic>
#include <filesystem>
#include <thread>

#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "util/error.h"

namespace intellect {
namespace {

// The byte tokenizer behind the common interface.
class ByteTokenizerAdapter final : public Tokenizer {
 public:
  std::vector<uint32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<uint32_t> ids;
    ids.reserve(text.size() + 1);
    if (add_bos) ids.push_back(ByteTokenizer::kBos);
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  // ByteTokenizer skips BOS/EOS: they have no text in this vocabulary.
  std::string decode(std::span<const uint32_t> ids) const override { return bytes_.decode(ids); }
  uint32_t vocab_size() const override { return ByteTokenizer::kVocab; }
  uint32_t bos_id() const override { return ByteTokenizer::kBos; }
  uint32_t eos_id() const override { return ByteTokenizer::kEos; }
  std::string name() const override { return "byte"; }
  // Every byte is a token, so any cut is exact.
  std::vector<uint32_t> encode_parallel(std::string_view text, bool add_bos,
                                        int) const override {
    return encode(text, add_bos);
  }

 private:
  ByteTokenizer bytes_;
};

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::vector<uint32_t> Tokenizer::encode_parallel(std::string_view text, bool add_bos, int) const {
  return encode(text, add_bos);
}

std::vector<std::vector<uint32_t>> Tokenizer::encode_batch(std::span<const std::string_view> texts,
                                                           bool add_bos, int threads) const {
  std::vector<std::vector<uint32_t>> out(texts.size());
  const size_t n_threads = std::min<size_t>(static_cast<size_t>(resolve_threads(threads)), texts.size());
  if (n_threads <= 1) {
    for (size_t i = 0; i < texts.size(); ++i) out[i] = encode(texts[i], add_bos);
    return out;
  }
  // Texts are taken one at a time from a shared counter, so a few long ones
  // do not leave the other threads idle.
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto work = [&] {
    try {
      for (size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < texts.size();)
        out[i] = encode(texts[i], add_bos);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < n_threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& spec) {
  namespace fs = std::filesystem;
  if (spec == "byte") return std::make_unique<ByteTokenizerAdapter>();
  std::error_code ec;
  if (fs::is_directory(spec, ec)) {
    for (const char* file : {"tokenizer.json", "tokenizer.model"}) {
      const std::string path = (fs::path(spec) / file).string();
      if (fs::exists(path, ec)) return load_tokenizer(path);
    }
    fail("tokenizer directory '", spec, "' has neither tokenizer.json nor tokenizer.model");
  }
  if (!fs::exists(spec, ec))
    fail("tokenizer '", spec, "' does not exist (give \"byte\", a tokenizer.json, a tiktoken "
         "tokenizer.model, or a directory holding one)");
  if (ends_with(spec, ".json")) return load_hf_tokenizer_json(spec);
  if (ends_with(spec, ".model") || ends_with(spec, ".tiktoken")) return load_tiktoken_model(spec);
  fail("cannot tell the format of tokenizer '", spec,
       "': expected a name ending in .json (HuggingFace tokenizer.json) or .model / .tiktoken "
       "(tiktoken BPE ranks)");
}

}  // namespace intellect
