#include "data/unicode_classes.h"

#include <array>
#include <map>
#include <vector>

namespace intellect {
namespace {

struct CodePointRange {
  uint32_t lo, hi;  // inclusive
};

#include "data/unicode_tables.inc"

// Two-stage lookup: the high bits of a code point pick a 256-entry block, and
// identical blocks (most of the code space is one class) are stored once, so
// the whole table is a few tens of KB and a lookup is two loads.
struct ClassTable {
  static constexpr uint32_t kBlockBits = 8;
  static constexpr uint32_t kBlocks = 0x110000 >> kBlockBits;
  std::array<uint16_t, kBlocks> block_of{};
  std::vector<std::array<CharClass, 256>> blocks;

  ClassTable() {
    std::vector<CharClass> all(0x110000, CharClass::kOther);
    std::map<std::array<CharClass, 256>, size_t> index;
    auto paint = [&](const CodePointRange* r, size_t n, CharClass c) {
      for (size_t i = 0; i < n; ++i)
        for (uint32_t cp = r[i].lo; cp <= r[i].hi; ++cp) all[cp] = c;
    };
    paint(kLetterRanges, std::size(kLetterRanges), CharClass::kLetter);
    paint(kNumberRanges, std::size(kNumberRanges), CharClass::kNumber);
    paint(kSpaceRanges, std::size(kSpaceRanges), CharClass::kSpace);
    for (uint32_t b = 0; b < kBlocks; ++b) {
      std::array<CharClass, 256> block;
      for (uint32_t i = 0; i < 256; ++i) block[i] = all[(b << kBlockBits) | i];
      auto [it, inserted] = index.try_emplace(block, blocks.size());
      if (inserted) blocks.push_back(block);
      block_of[b] = static_cast<uint16_t>(it->second);
    }
  }
};

const ClassTable& table() {
  static const ClassTable t;
  return t;
}

}  // namespace

CharClass char_class(uint32_t code_point) {
  if (code_point >= 0x110000) return CharClass::kOther;
  const ClassTable& t = table();
  return t.blocks[t.block_of[code_point >> ClassTable::kBlockBits]][code_point & 0xFF];
}

}  // namespace intellect
