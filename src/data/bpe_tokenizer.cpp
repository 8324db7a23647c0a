#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <queue>
#include <thread>
#include <unordered_map>

#include "util/error.h"

namespace intellect {
namespace {

constexpr uint32_t kNone = 0xFFFFFFFFu;

inline uint64_t mix64(uint64_t x) {
  // A strong 64-bit finaliser: pair keys differ in few bits.
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline uint64_t hash_bytes(std::string_view s) { return std::hash<std::string_view>{}(s); }

size_t table_size_for(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;  // load factor at most 1/2
  return cap;
}

// Word -> ids for pieces that needed merging, one per thread, so hot words are
// merged once. Keyed by a tokenizer's serial number, not its address, so a new
// tokenizer at a freed address never sees stale entries.
struct WordCache {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  static constexpr size_t kMaxEntries = 1 << 16;
  static constexpr size_t kMaxWordBytes = 64;
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<uint32_t>, Hash, std::equal_to<>> map;

  std::unordered_map<std::string, std::vector<uint32_t>, Hash, std::equal_to<>>& for_owner(uint64_t id) {
    if (owner != id) {
      map.clear();
      owner = id;
    }
    return map;
  }
};
thread_local WordCache t_word_cache;
std::atomic<uint64_t> g_tokenizer_serial{0};

}  // namespace

// Open addressing with linear probing over power-of-two tables.
struct BpeTokenizer::Tables {
  // Vocabulary: bytes -> id, for ignore_merges' whole-piece lookup and token_id().
  struct VocabSlot {
    uint32_t hash32 = 0;
    uint32_t id = kNone;
  };
  std::vector<VocabSlot> vocab;
  size_t vocab_mask = 0;

  // Merges: (left, right) -> (rank, result).
  struct MergeSlot {
    uint64_t key = ~0ULL;
    uint32_t rank = kNone, result = kNone;
  };
  std::vector<MergeSlot> merges;
  size_t merges_mask = 0;
  size_t merge_count = 0;

  uint32_t find_vocab(std::string_view bytes, const std::vector<std::string>& tokens) const {
    const uint64_t h = hash_bytes(bytes);
    const uint32_t h32 = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & vocab_mask;; i = (i + 1) & vocab_mask) {
      const VocabSlot& s = vocab[i];
      if (s.id == kNone) return kNone;
      if (s.hash32 == h32 && tokens[s.id] == bytes) return s.id;
    }
  }
  void insert_vocab(uint32_t id, const std::vector<std::string>& tokens) {
    const uint64_t h = hash_bytes(tokens[id]);
    for (size_t i = h & vocab_mask;; i = (i + 1) & vocab_mask) {
      VocabSlot& s = vocab[i];
      if (s.id == kNone) {
        s = {static_cast<uint32_t>(h >> 32), id};
        return;
      }
    }
  }

  // Returns the rank (kNone when the pair never merges) and sets *result.
  inline uint32_t find_merge(uint32_t a, uint32_t b, uint32_t* result) const {
    const uint64_t key = (uint64_t(a) << 32) | b;
    for (size_t i = mix64(key) & merges_mask;; i = (i + 1) & merges_mask) {
      const MergeSlot& s = merges[i];
      if (s.key == key) {
        *result = s.result;
        return s.rank;
      }
      if (s.rank == kNone) return kNone;
    }
  }
  void insert_merge(uint32_t a, uint32_t b, uint32_t rank, uint32_t result) {
    const uint64_t key = (uint64_t(a) << 32) | b;
    for (size_t i = mix64(key) & merges_mask;; i = (i + 1) & merges_mask) {
      MergeSlot& s = merges[i];
      if (s.rank == kNone || s.key == key) {  // a repeated pair: the later entry wins, as in HF
        if (s.rank == kNone) ++merge_count;
        s = {key, rank, result};
        return;
      }
    }
  }
};

BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer::BpeTokenizer(BpeSpec spec)
    : name_(std::move(spec.name)),
      tables_(std::make_unique<Tables>()),
      pre_(std::move(spec.pre_tokenizer)),
      ignore_merges_(spec.ignore_merges),
      bos_prefix_(std::move(spec.bos_prefix)),
      bos_(spec.bos),
      eos_(spec.eos),
      cache_owner_id_(++g_tokenizer_serial) {
  uint32_t max_id = 0;
  for (const auto& [bytes, id] : spec.vocab) max_id = std::max(max_id, id);
  for (const auto& a : spec.added) max_id = std::max(max_id, a.id);
  if (spec.vocab.empty()) fail("tokenizer '", name_, "' has an empty vocabulary");
  if (max_id >= kNone - 1) fail("tokenizer '", name_, "' has a token id too large: ", max_id);
  const size_t entries = spec.vocab.size() + spec.added.size();
  if (max_id > 2 * entries + 1024)
    fail("tokenizer '", name_, "' has token id ", max_id, " but only ", entries,
         " entries: ids must be (nearly) dense");
  tokens_.resize(size_t(max_id) + 1);
  is_token_.assign(size_t(max_id) + 1, 0);

  Tables& t = *tables_;
  t.vocab.assign(table_size_for(spec.vocab.size()), {});
  t.vocab_mask = t.vocab.size() - 1;
  for (auto& [bytes, id] : spec.vocab) {
    if (bytes.empty()) fail("tokenizer '", name_, "': vocabulary entry ", id, " is empty");
    if (is_token_[id])
      fail("tokenizer '", name_, "': id ", id, " appears twice in the vocabulary");
    if (t.find_vocab(bytes, tokens_) != kNone)
      fail("tokenizer '", name_, "': the vocabulary has the token of id ", id,
           " twice (also as id ", t.find_vocab(bytes, tokens_), ")");
    tokens_[id] = std::move(bytes);
    is_token_[id] = 1;
    t.insert_vocab(id, tokens_);
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const uint32_t id = t.find_vocab(std::string_view(&c, 1), tokens_);
    if (id == kNone)
      fail("tokenizer '", name_, "' has no token for byte 0x", std::hex, b,
           ": intellect supports byte-level BPE, whose vocabulary covers all 256 bytes");
    byte_ids_[b] = id;
  }

  t.merges.assign(table_size_for(spec.merges.size()), {});
  t.merges_mask = t.merges.size() - 1;
  std::string joined;
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto [a, b] = spec.merges[rank];
    joined = tokens_[a];
    joined += tokens_[b];
    const uint32_t result = t.find_vocab(joined, tokens_);
    if (result == kNone)
      fail("tokenizer '", name_, "': merge ", rank, " (ids ", a, " + ", b,
           ") makes a token that is not in the vocabulary");
    t.insert_merge(a, b, static_cast<uint32_t>(rank), result);
  }

  // Added tokens: ids may repeat model tokens (GPT-2's <|endoftext|>); their
  // text is what decode gives, and they are matched before pre-tokenization.
  added_by_first_byte_.resize(256);
  for (AddedToken& a : spec.added) {
    if (a.content.empty()) fail("tokenizer '", name_, "': added token ", a.id, " is empty");
    tokens_[a.id] = a.content;
    is_token_[a.id] = 1;
    const auto first = static_cast<unsigned char>(a.content[0]);
    added_first_byte_[first] = true;
    added_by_first_byte_[first].push_back(std::move(a));
  }
  int distinct = 0;
  for (int b = 0; b < 256; ++b) {
    auto& list = added_by_first_byte_[b];
    std::stable_sort(list.begin(), list.end(), [](const AddedToken& x, const AddedToken& y) {
      return x.content.size() > y.content.size();
    });
    if (!list.empty()) {
      ++distinct;
      single_first_byte_ = b;
    }
  }
  if (distinct != 1) single_first_byte_ = -1;
  for (uint32_t id : bos_prefix_)
    if (id >= tokens_.size() || !is_token_[id])
      fail("tokenizer '", name_, "': the BOS template names id ", id, ", which does not exist");
}

size_t BpeTokenizer::merge_count() const { return tables_->merge_count; }

std::optional<uint32_t> BpeTokenizer::token_id(std::string_view bytes) const {
  const uint32_t id = tables_->find_vocab(bytes, tokens_);
  if (id != kNone) return id;
  if (!bytes.empty())
    for (const AddedToken& a : added_by_first_byte_[static_cast<unsigned char>(bytes[0])])
      if (a.content == bytes) return a.id;
  return std::nullopt;
}

uint32_t BpeTokenizer::bos_id() const {
  if (!bos_)
    fail("tokenizer '", name_, "' defines no BOS token (no post-processor template with a "
         "leading special token, and no <|begin_of_text|>, <s> or <|endoftext|>)");
  return *bos_;
}

uint32_t BpeTokenizer::eos_id() const {
  if (!eos_)
    fail("tokenizer '", name_, "' defines no EOS token (none of <|end_of_text|>, "
         "<|endoftext|>, </s>, <eos> among its added tokens, and no eos_token in a "
         "tokenizer_config.json beside it)");
  return *eos_;
}

BpeTokenizer::SpecialMatch BpeTokenizer::find_special(std::string_view text, size_t from) const {
  const char* base = text.data();
  const size_t n = text.size();
  size_t p = from;
  while (p < n) {
    if (single_first_byte_ >= 0) {
      const void* hit = std::memchr(base + p, single_first_byte_, n - p);
      if (hit == nullptr) break;
      p = static_cast<size_t>(static_cast<const char*>(hit) - base);
    } else if (!added_first_byte_[static_cast<unsigned char>(base[p])]) {
      ++p;
      continue;
    }
    for (const AddedToken& a : added_by_first_byte_[static_cast<unsigned char>(base[p])])
      if (a.content.size() <= n - p && std::memcmp(base + p, a.content.data(), a.content.size()) == 0)
        return {p, a.content.size(), a.id};
    ++p;
  }
  return {};
}

std::vector<uint32_t> BpeTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<uint32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_bos) {
    if (bos_prefix_.empty()) out.push_back(bos_id());
    else out.insert(out.end(), bos_prefix_.begin(), bos_prefix_.end());
  }
  size_t pos = 0;
  for (SpecialMatch m; (m = find_special(text, pos)).pos != std::string_view::npos;) {
    encode_ordinary(text.substr(pos, m.pos - pos), out);
    out.push_back(m.id);
    pos = m.pos + m.len;
  }
  encode_ordinary(text.substr(pos), out);
  return out;
}

void BpeTokenizer::encode_ordinary(std::string_view text, std::vector<uint32_t>& out) const {
  if (text.empty()) return;
  if (!pre_) {
    encode_piece(text, out);
    return;
  }
  // Bounded batches keep the piece list small for long texts.
  constexpr size_t kBatch = 1 << 16;
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.size();
    if (pre_->splits_after_newline() && text.size() - pos > 2 * kBatch) {
      // Cut at a place the pre-tokenizer always cuts, if there is one soon.
      for (size_t k = pos + kBatch; k + 1 < text.size() && k < pos + 2 * kBatch; ++k) {
        const void* nl = std::memchr(text.data() + k, '\n', pos + 2 * kBatch - k);
        if (nl == nullptr) break;
        k = static_cast<size_t>(static_cast<const char*>(nl) - text.data());
        const auto next = static_cast<unsigned char>(k + 1 < text.size() ? text[k + 1] : 0);
        if (next >= 0x21 && next <= 0x7E) {
          end = k + 1;
          break;
        }
      }
    }
    pieces.clear();
    pre_->split(text.substr(pos, end - pos), pieces);
    for (std::string_view piece : pieces) encode_piece(piece, out);
    pos = end;
  }
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<uint32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  if (ignore_merges_) {
    const uint32_t id = tables_->find_vocab(piece, tokens_);
    if (id != kNone) {
      out.push_back(id);
      return;
    }
  }
  const bool cacheable = piece.size() <= WordCache::kMaxWordBytes;
  if (cacheable) {
    auto& map = t_word_cache.for_owner(cache_owner_id_);
    if (auto it = map.find(piece); it != map.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out.size();
  if (piece.size() <= 64) merge_short(piece, out);
  else merge_long(piece, out);
  if (cacheable) {
    auto& map = t_word_cache.for_owner(cache_owner_id_);
    if (map.size() >= WordCache::kMaxEntries) map.clear();
    map.emplace(std::string(piece), std::vector<uint32_t>(out.begin() + before, out.end()));
  }
}

// Short pieces: arrays and a linear scan for the best pair beat a heap.
// Repeatedly merges the lowest-ranked adjacent pair, the leftmost on ties.
void BpeTokenizer::merge_short(std::string_view piece, std::vector<uint32_t>& out) const {
  const Tables& t = *tables_;
  uint32_t ids[64], ranks[64], results[64];
  size_t n = piece.size();
  for (size_t i = 0; i < n; ++i) ids[i] = byte_ids_[static_cast<unsigned char>(piece[i])];
  for (size_t i = 0; i + 1 < n; ++i) ranks[i] = t.find_merge(ids[i], ids[i + 1], &results[i]);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (ranks[i] < ranks[best]) best = i;
    if (ranks[best] == kNone) break;
    ids[best] = results[best];
    // Drop symbol best+1 and pair best+1; pairs after it move down by one.
    std::memmove(ids + best + 1, ids + best + 2, (n - best - 2) * sizeof(uint32_t));
    if (n >= best + 3) {
      std::memmove(ranks + best + 1, ranks + best + 2, (n - best - 3) * sizeof(uint32_t));
      std::memmove(results + best + 1, results + best + 2, (n - best - 3) * sizeof(uint32_t));
    }
    --n;
    if (best > 0) ranks[best - 1] = t.find_merge(ids[best - 1], ids[best], &results[best - 1]);
    if (best + 1 < n) ranks[best] = t.find_merge(ids[best], ids[best + 1], &results[best]);
  }
  out.insert(out.end(), ids, ids + n);
}

// Long pieces (long digit-free runs, base64 blobs, ...): a heap of candidate
// pairs over a linked list, O(n log n). Stale candidates are recognised by the
// ids they were made for, as in HF's implementation.
void BpeTokenizer::merge_long(std::string_view piece, std::vector<uint32_t>& out) const {
  const Tables& t = *tables_;
  const size_t n = piece.size();
  struct Sym {
    uint32_t id;
    int32_t prev, next;
  };
  std::vector<Sym> syms(n);
  for (size_t i = 0; i < n; ++i)
    syms[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], static_cast<int32_t>(i) - 1,
               i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
  struct Candidate {
    uint32_t rank, pos, left, right, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0 || syms[pos].next < 0) return;
    const uint32_t a = syms[pos].id, b = syms[syms[pos].next].id;
    uint32_t result = kNone;
    const uint32_t rank = t.find_merge(a, b, &result);
    if (rank != kNone) heap.push({rank, static_cast<uint32_t>(pos), a, b, result});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Sym& s = syms[c.pos];
    if (s.id != c.left || s.next < 0 || syms[s.next].id != c.right) continue;  // stale
    Sym& right = syms[s.next];
    s.id = c.result;
    right.id = kNone;  // dead: no candidate can name it as its left symbol
    s.next = right.next;
    if (s.next >= 0) syms[s.next].prev = static_cast<int32_t>(c.pos);
    consider(s.prev);
    consider(static_cast<int32_t>(c.pos));
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

std::string BpeTokenizer::decode(std::span<const uint32_t> ids) const {
  std::string text;
  text.reserve(ids.size() * 4);
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint32_t id = ids[i];
    if (id >= tokens_.size() || !is_token_[id])
      fail("tokenizer '", name_, "' cannot decode token id ", id, " at position ", i,
           ": no such token (vocabulary size ", tokens_.size(), ")");
    text += tokens_[id];
  }
  return text;
}

std::vector<uint32_t> BpeTokenizer::encode_parallel(std::string_view text, bool add_bos,
                                                    int threads) const {
  const int n_threads = resolve_threads(threads);
  constexpr size_t kMinUnit = 1 << 16;
  if (n_threads <= 1 || text.size() < 2 * kMinUnit || !pre_ || !pre_->splits_after_newline())
    return encode(text, add_bos);

  // Work units: runs of ordinary text cut where the pre-tokenizer always cuts
  // ("\n" then printable ASCII), and the added tokens between them.
  struct Unit {
    size_t begin, end;
    uint32_t special;  // kNone for ordinary text
  };
  std::vector<Unit> units;
  const size_t target = std::max(kMinUnit, text.size() / (size_t(n_threads) * 8));
  auto cut = [&](size_t begin, size_t end) {
    while (end - begin > 2 * target) {
      size_t at = std::string_view::npos;
      for (size_t k = begin + target; k + 1 < end;) {
        const void* nl = std::memchr(text.data() + k, '\n', end - 1 - k);
        if (nl == nullptr) break;
        k = static_cast<size_t>(static_cast<const char*>(nl) - text.data());
        const auto next = static_cast<unsigned char>(text[k + 1]);
        if (next >= 0x21 && next <= 0x7E) {
          at = k + 1;
          break;
        }
        ++k;
      }
      if (at == std::string_view::npos) break;
      units.push_back({begin, at, kNone});
      begin = at;
    }
    if (end > begin) units.push_back({begin, end, kNone});
  };
  size_t pos = 0;
  for (SpecialMatch m; (m = find_special(text, pos)).pos != std::string_view::npos;) {
    cut(pos, m.pos);
    units.push_back({m.pos, m.pos + m.len, m.id});
    pos = m.pos + m.len;
  }
  cut(pos, text.size());

  std::vector<std::vector<uint32_t>> parts(units.size());
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  auto work = [&] {
    try {
      for (size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < units.size();) {
        const Unit& u = units[i];
        if (u.special != kNone) parts[i].push_back(u.special);
        else encode_ordinary(text.substr(u.begin, u.end - u.begin), parts[i]);
      }
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  const size_t extra = std::min<size_t>(size_t(n_threads), units.size()) - 1;
  for (size_t i = 0; i < extra; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  if (error) std::rethrow_exception(error);

  size_t total = add_bos ? std::max<size_t>(1, bos_prefix_.size()) : 0;
  for (const auto& p : parts) total += p.size();
  std::vector<uint32_t> out;
  out.reserve(total);
  if (add_bos) {
    if (bos_prefix_.empty()) out.push_back(bos_id());
    else out.insert(out.end(), bos_prefix_.begin(), bos_prefix_.end());
  }
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace intellect
