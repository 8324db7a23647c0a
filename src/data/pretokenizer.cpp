#include "data/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>

#include "data/unicode_classes.h"
#include "util/error.h"

namespace intellect {
namespace {

// ---- the hand scanner ---------------------------------------------------------

// One character at a position: its class and byte length; `valid` is false for
// an invalid UTF-8 byte, which belongs to no class (not even a negated one).
struct Char {
  CharClass cls = CharClass::kOther;
  uint32_t cp = 0;
  uint8_t len = 0;  // 0 at the end of the text
  bool valid = false;

  bool end() const { return len == 0; }
  bool is(CharClass c) const { return valid && cls == c; }
  bool letter() const { return is(CharClass::kLetter); }
  bool number() const { return is(CharClass::kNumber); }
  bool space() const { return is(CharClass::kSpace); }
  bool other() const { return is(CharClass::kOther); }
  bool crlf() const { return valid && (cp == '\r' || cp == '\n'); }
};

constexpr std::array<CharClass, 128> make_ascii_classes() {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
      t[c] = CharClass::kLetter;
    else if (c >= '0' && c <= '9')
      t[c] = CharClass::kNumber;
    else if (c == ' ' || (c >= 9 && c <= 13))
      t[c] = CharClass::kSpace;
    else
      t[c] = CharClass::kOther;
  }
  return t;
}
constexpr std::array<CharClass, 128> kAscii = make_ascii_classes();

inline Char char_at(const unsigned char* p, const unsigned char* end) {
  Char c;
  if (p >= end) return c;
  if (*p < 0x80) {
    c.cp = *p;
    c.cls = kAscii[*p];
    c.len = 1;
    c.valid = true;
    return c;
  }
  uint32_t cp = 0;
  const size_t n = decode_utf8(p, end, &cp);
  if (n == 0) {
    c.len = 1;
    return c;
  }
  c.cp = cp;
  c.cls = char_class(cp);
  c.len = static_cast<uint8_t>(n);
  c.valid = true;
  return c;
}

enum class Flavor { kLlama3, kGpt2 };

// Follows the patterns' alternatives in order, as a backtracking regex engine
// does: the first alternative that matches at a position wins.
class ScannerPreTokenizer final : public PreTokenizer {
 public:
  explicit ScannerPreTokenizer(Flavor flavor) : flavor_(flavor) {}

  void split(std::string_view text, std::vector<std::string_view>& out) const override {
    const auto* begin = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = begin + text.size();
    const unsigned char* p = begin;
    while (p < end) {
      const unsigned char* q = flavor_ == Flavor::kLlama3 ? llama3(p, end) : gpt2(p, end);
      out.emplace_back(text.data() + (p - begin), static_cast<size_t>(q - p));
      p = q;
    }
  }

  bool splits_after_newline() const override { return true; }

 private:
  // Case-insensitive in Llama 3 ((?i:...) also folds U+017F LONG S to 's', as
  // HF's regex engine does), case-sensitive in GPT-2. Returns the end or null.
  static const unsigned char* contraction(const unsigned char* p, const unsigned char* end,
                                          bool fold) {
    if (*p != '\'') return nullptr;
    const unsigned char* q = p + 1;
    auto lower = [&](const unsigned char* at) -> int {
      if (at >= end) return -1;
      int c = *at;
      if (fold && c >= 'A' && c <= 'Z') c += 'a' - 'A';
      return c;
    };
    const int c1 = lower(q);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return q + 1;
    if (fold && q + 1 < end && q[0] == 0xC5 && q[1] == 0xBF) return q + 2;  // ſ
    const int c2 = lower(q + 1);
    if ((c1 == 'r' || c1 == 'v') && c2 == 'e') return q + 2;
    if (c1 == 'l' && c2 == 'l') return q + 2;
    return nullptr;
  }

  template <class Pred>
  static const unsigned char* run(const unsigned char* p, const unsigned char* end, Pred pred) {
    while (p < end) {
      const Char c = char_at(p, end);
      if (!pred(c)) break;
      p += c.len;
    }
    return p;
  }

  // The whitespace alternatives shared by both patterns: \s+(?!\S) then \s+
  // (Llama 3 tries \s*[\r\n]+ before them, passing want_crlf).
  static const unsigned char* whitespace(const unsigned char* p, const unsigned char* end,
                                         bool want_crlf) {
    const unsigned char* last_start = p;  // start of the run's last character
    const unsigned char* after_crlf = nullptr;
    const unsigned char* q = p;
    while (q < end) {
      const Char c = char_at(q, end);
      if (!c.space()) break;
      last_start = q;
      q += c.len;
      if (c.cp == '\r' || c.cp == '\n') after_crlf = q;
    }
    // \s*[\r\n]+ : greedy \s* backs off to the run's last CR/LF.
    if (want_crlf && after_crlf != nullptr) return after_crlf;
    // \s+(?!\S) : at the end of text, or before an invalid byte (not \S), the
    // whole run; before a non-space character, the run less its last character.
    const Char next = char_at(q, end);
    if (next.end() || !next.valid) return q;
    if (last_start > p) return last_start;
    return q;  // \s+
  }

  static const unsigned char* invalid_run(const unsigned char* p, const unsigned char* end) {
    return run(p, end, [](const Char& c) { return !c.valid; });
  }

  const unsigned char* llama3(const unsigned char* p, const unsigned char* end) const {
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (const unsigned char* q = contraction(p, end, true)) return q;
    const Char c0 = char_at(p, end);
    const Char c1 = char_at(p + c0.len, end);
    auto letter = [](const Char& c) { return c.letter(); };
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c0.valid && !c0.letter() && !c0.number() && !c0.crlf() && c1.letter())
      return run(p + c0.len, end, letter);
    if (c0.letter()) return run(p, end, letter);
    // \p{N}{1,3}
    if (c0.number()) {
      const unsigned char* q = p;
      for (int i = 0; i < 3; ++i) {
        const Char c = char_at(q, end);
        if (!c.number()) break;
        q += c.len;
      }
      return q;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const unsigned char* start = nullptr;
    if (c0.valid && c0.cp == ' ' && c1.other()) start = p + 1;
    else if (c0.other()) start = p;
    if (start != nullptr) {
      const unsigned char* q = run(start, end, [](const Char& c) { return c.other(); });
      while (q < end && (*q == '\r' || *q == '\n')) ++q;
      return q;
    }
    // \s*[\r\n]+ | \s+(?!\S) | \s+
    if (c0.space()) return whitespace(p, end, true);
    return invalid_run(p, end);
  }

  const unsigned char* gpt2(const unsigned char* p, const unsigned char* end) const {
    if (const unsigned char* q = contraction(p, end, false)) return q;
    const Char c0 = char_at(p, end);
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+', in that order
    const bool space = c0.valid && c0.cp == ' ';
    const Char c1 = space ? char_at(p + 1, end) : c0;
    const unsigned char* body = space ? p + 1 : p;
    if (c1.letter()) return run(body, end, [](const Char& c) { return c.letter(); });
    if (c1.number()) return run(body, end, [](const Char& c) { return c.number(); });
    if (c1.other()) return run(body, end, [](const Char& c) { return c.other(); });
    if (c0.space()) return whitespace(p, end, false);
    return invalid_run(p, end);
  }

  Flavor flavor_;
};

// ---- PCRE2 ---------------------------------------------------------------------

class Pcre2PreTokenizer final : public PreTokenizer {
 public:
  explicit Pcre2PreTokenizer(const std::string& pattern) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
    if (code_ == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      fail("cannot compile the pre-tokenizer regex '", pattern, "' at offset ", offset, ": ",
           reinterpret_cast<const char*>(msg),
           " (intellect runs tokenizer.json regexes with PCRE2; the pattern may use syntax "
           "only HF's Oniguruma engine knows)");
    }
    // JIT is an optimisation: without it (e.g. no executable memory) matching still works.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Pcre2PreTokenizer() override { pcre2_code_free(code_); }
  Pcre2PreTokenizer(const Pcre2PreTokenizer&) = delete;
  Pcre2PreTokenizer& operator=(const Pcre2PreTokenizer&) = delete;

  void split(std::string_view text, std::vector<std::string_view>& out) const override {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    if (md == nullptr) fail("out of memory creating PCRE2 match data");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0, emitted = 0;
    while (pos < text.size()) {
      const int rc = pcre2_match(code_, subject, text.size(), pos, 0, md, nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        pcre2_match_data_free(md);
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        fail("pre-tokenizer regex '", pattern_, "' failed at byte ", pos, ": ",
             reinterpret_cast<const char*>(msg));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const size_t s = ov[0], e = ov[1];
      if (e == s) {  // an empty match is no piece; step over one byte and go on
        pos = s + 1;
        continue;
      }
      if (s > emitted) out.push_back(text.substr(emitted, s - emitted));  // the gap
      out.push_back(text.substr(s, e - s));
      emitted = pos = e;
    }
    if (emitted < text.size()) out.push_back(text.substr(emitted));
    pcre2_match_data_free(md);
  }

  bool splits_after_newline() const override { return false; }  // unknown pattern

 private:
  std::string pattern_;
  pcre2_code* code_ = nullptr;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> stages)
      : stages_(std::move(stages)) {}

  void split(std::string_view text, std::vector<std::string_view>& out) const override {
    std::vector<std::string_view> current{text}, next;
    for (const auto& stage : stages_) {
      next.clear();
      for (std::string_view piece : current) stage->split(piece, next);
      current.swap(next);
    }
    out.insert(out.end(), current.begin(), current.end());
  }

  bool splits_after_newline() const override {
    // Only the first stage sees the raw text: a later stage cutting there
    // says nothing about whether an earlier one matches across the cut.
    return !stages_.empty() && stages_.front()->splits_after_newline();
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> stages_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_regex_pretokenizer(const std::string& pattern) {
  if (pattern == kLlama3Pattern) return std::make_unique<ScannerPreTokenizer>(Flavor::kLlama3);
  if (pattern == kGpt2Pattern) return std::make_unique<ScannerPreTokenizer>(Flavor::kGpt2);
  return make_pcre2_pretokenizer(pattern);
}

std::unique_ptr<PreTokenizer> make_pcre2_pretokenizer(const std::string& pattern) {
  return std::make_unique<Pcre2PreTokenizer>(pattern);
}

std::unique_ptr<PreTokenizer> make_sequence_pretokenizer(
    std::vector<std::unique_ptr<PreTokenizer>> stages) {
  if (stages.size() == 1) return std::move(stages[0]);
  return std::make_unique<SequencePreTokenizer>(std::move(stages));
}

}  // namespace intellect
