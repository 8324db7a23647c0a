// Pre-tokenizers: cut text into the pieces ("words") that BPE then encodes one
// by one, as the `pre_tokenizer` of a HuggingFace tokenizer.json does.
//
// The two patterns in wide use (Llama 3's Split regex and GPT-2's ByteLevel
// regex) run on hand-written scanners that follow the regex's backtracking
// semantics exactly and use Unicode tables taken from HF's own regex engine;
// any other pattern runs on PCRE2 (UTF + UCP, JIT-compiled).
//
// Invalid UTF-8 (HF cannot take it: Python strings are always valid) is
// defined here as: an invalid byte belongs to no character class, so no regex
// alternative matches it, and each maximal run of invalid bytes becomes a
// piece of its own. Both the scanners and PCRE2 (with PCRE2_MATCH_INVALID_UTF)
// behave this way, and the bytes still reach BPE, so no input byte is lost.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace intellect {

// Llama 3's pre-tokenizer regex, as in its tokenizer.json and Meta's tiktoken code.
inline constexpr std::string_view kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// GPT-2's regex, which HF's ByteLevel pre-tokenizer applies when use_regex is true.
inline constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Appends the pieces of `text` to `out`, in order; they concatenate to `text`.
  virtual void split(std::string_view text, std::vector<std::string_view>& out) const = 0;
  // True when a piece never spans "\n" followed by a printable ASCII byte
  // (0x21..0x7E), so text may be cut between the two and the halves encoded
  // independently with the same result: this is what makes parallel encoding
  // of one long text exact.
  virtual bool splits_after_newline() const = 0;
};

// A regex Split with HF's "Isolated" behaviour: matches and the gaps between
// them are both pieces. Picks a hand scanner for the two known patterns.
std::unique_ptr<PreTokenizer> make_regex_pretokenizer(const std::string& pattern);

// Always uses PCRE2, whatever the pattern (tests compare it with the scanners).
std::unique_ptr<PreTokenizer> make_pcre2_pretokenizer(const std::string& pattern);

// Applies each stage to every piece of the previous one, like HF's Sequence.
std::unique_ptr<PreTokenizer> make_sequence_pretokenizer(
    std::vector<std::unique_ptr<PreTokenizer>> stages);

}  // namespace intellect
