#include "data/synthetic_corpus.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <set>
#include <span>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "data/byte_tokenizer.h"
#include "data/token_shard.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

// ---------------------------------------------------------------------------
// Randomness. splitmix64 (Steele, Lea & Flood) written out here so the corpus
// is the same on every platform and standard library.

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class Rng {
 public:
  // Seed and index are hashed separately, so nearby (seed, index) pairs give
  // unrelated streams rather than shifted copies of one another.
  Rng(uint64_t seed, uint64_t index) : state_(mix64(mix64(seed) + 0x632be59bd9b4e019ULL * (index + 1))) {}

  uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix64(state_);
  }
  // Uniform in [0, n) by multiply-shift: exact enough for text, and portable.
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(((next() >> 32) * n) >> 32); }
  int range(int lo, int hi) { return lo + static_cast<int>(below(static_cast<uint32_t>(hi - lo + 1))); }
  bool chance(int percent) { return below(100) < static_cast<uint32_t>(percent); }
  template <class T, size_t N>
  const T& pick(const T (&items)[N]) {
    return items[below(N)];
  }

 private:
  uint64_t state_;
};

// ---------------------------------------------------------------------------
// Vocabulary.

struct Noun {
  std::string_view one, many;
};

struct Verb {
  std::string_view base, third, past;
  std::string_view complement;  // a template, see fill()
};

struct Animal {
  std::string_view one, many, sound;  // sound empty: makes no sound we name
  int legs;
  std::string_view home_one, home_many;
};

constexpr std::string_view kGirlNames[] = {"Anna", "Mia",  "Lily", "Sara", "Emma", "Nora",
                                           "Rosa", "Lucy", "Ella", "Maya", "Ruby", "Zoe",
                                           "Ivy",  "Clara", "Hana", "Lena"};
constexpr std::string_view kBoyNames[] = {"Tom",  "Ben",  "Max", "Sam",  "Leo",  "Jack",
                                          "Finn", "Noah", "Omar", "Hugo", "Theo", "Eli",
                                          "Paul", "Ravi", "Otto", "Dan"};
constexpr std::string_view kGirlKinds[] = {"girl", "princess", "queen", "farmer", "baker", "teacher"};
constexpr std::string_view kBoyKinds[] = {"boy", "prince", "king", "farmer", "baker", "sailor"};
constexpr std::string_view kAnimalKinds[] = {"cat",  "dog",  "fox",   "rabbit", "mouse", "bird",
                                             "duck", "owl",  "bear",  "frog",   "horse", "goat",
                                             "pig",  "hen",  "squirrel", "turtle"};

constexpr std::string_view kAdjectives[] = {"big",    "small",  "little",  "old",      "young",
                                            "tiny",   "tall",   "kind",    "brave",    "clever",
                                            "shy",    "quiet",  "gentle",  "curious",  "friendly",
                                            "lazy",   "busy",   "funny",   "wise",     "happy"};
constexpr std::string_view kColors[] = {"red",  "blue",  "green", "yellow", "brown", "white", "black",
                                        "orange", "pink", "purple", "gray", "golden", "silver"};
constexpr std::string_view kEmotions[] = {"happy", "sad",    "tired",  "surprised", "scared", "excited",
                                          "proud", "hungry", "sleepy", "calm",      "glad"};
constexpr std::string_view kNice[] = {"beautiful", "lovely", "strange", "pretty", "wonderful", "shiny"};
constexpr std::string_view kHomes[] = {"house", "cottage", "village", "town",  "farm",
                                       "castle", "cabin",  "tower",   "garden"};
constexpr std::string_view kLandmarks[] = {"river", "lake",  "hill",   "sea",   "forest", "road",
                                           "bridge", "mountain", "meadow", "pond", "beach", "market"};
constexpr std::string_view kSpots[] = {"bed", "table", "chair", "old tree", "bush", "big rock",
                                       "bench", "door", "window", "blanket", "stairs"};
constexpr std::string_view kTimes[] = {"morning", "afternoon", "evening", "night"};
constexpr std::string_view kOutdoors[] = {"park", "meadow", "garden", "forest", "field", "yard"};
constexpr std::string_view kWaters[] = {"river", "lake", "pond", "sea"};
constexpr std::string_view kLow[] = {"fence", "log", "rock", "puddle", "wall"};
constexpr std::string_view kSky[] = {"moon", "stars", "clouds", "sun", "sky", "rain"};
constexpr std::string_view kErrands[] = {"market", "school", "village", "shop", "river", "farm"};
constexpr std::string_view kSeats[] = {"bench", "grass", "chair", "wall", "rock", "floor"};
constexpr std::string_view kTall[] = {"tree", "hill", "tower", "stairs", "ladder", "mountain"};
constexpr std::string_view kRooms[] = {"kitchen", "garden", "hall", "rain", "yard"};
constexpr std::string_view kSongs[] = {"happy", "sad", "short", "long", "quiet", "silly"};
constexpr std::string_view kRelatives[] = {"mother", "father", "sister", "brother", "grandmother",
                                           "grandfather", "teacher", "friend", "uncle", "aunt"};
constexpr std::string_view kRelativesMany[] = {"friends", "sisters", "brothers", "cousins",
                                               "parents", "neighbors"};

constexpr Noun kThings[] = {{"ball", "balls"},     {"book", "books"},       {"box", "boxes"},
                            {"cup", "cups"},       {"hat", "hats"},         {"kite", "kites"},
                            {"stone", "stones"},   {"shell", "shells"},     {"flower", "flowers"},
                            {"key", "keys"},       {"coin", "coins"},       {"egg", "eggs"},
                            {"toy", "toys"},       {"leaf", "leaves"},      {"pencil", "pencils"},
                            {"boat", "boats"},     {"bell", "bells"},       {"feather", "feathers"},
                            {"candle", "candles"}, {"sock", "socks"},       {"map", "maps"},
                            {"drum", "drums"},     {"basket", "baskets"},   {"button", "buttons"},
                            {"umbrella", "umbrellas"}, {"acorn", "acorns"}, {"ribbon", "ribbons"}};
constexpr Noun kFoods[] = {{"apple", "apples"},   {"pear", "pears"},     {"carrot", "carrots"},
                           {"cookie", "cookies"}, {"orange", "oranges"}, {"egg", "eggs"},
                           {"cake", "cakes"},     {"berry", "berries"},  {"plum", "plums"},
                           {"muffin", "muffins"}, {"peach", "peaches"},  {"nut", "nuts"}};

constexpr Verb kVerbs[] = {
    {"run", "runs", "ran", "in the {outdoor}"},
    {"sleep", "sleeps", "slept", "under the {spot}"},
    {"sing", "sings", "sang", "~ {song} song"},
    {"swim", "swims", "swam", "in the {water}"},
    {"play", "plays", "played", "with ~ {color} ball"},
    {"jump", "jumps", "jumped", "over the {low}"},
    {"eat", "eats", "ate", "~ {food}"},
    {"look", "looks", "looked", "at the {sky}"},
    {"walk", "walks", "walked", "to the {errand}"},
    {"hide", "hides", "hid", "behind the {spot}"},
    {"wait", "waits", "waited", "by the {landmark}"},
    {"sit", "sits", "sat", "on the {seat}"},
    {"watch", "watches", "watched", "the {animals}"},
    {"carry", "carries", "carried", "~ {thing} to the {home}"},
    {"fly", "flies", "flew", "~ {color} kite"},
    {"read", "reads", "read", "~ book about {animals}"},
    {"climb", "climbs", "climbed", "the {tall}"},
    {"draw", "draws", "drew", "~ picture of ~ {animal}"},
    {"dance", "dances", "danced", "in the {room}"},
    {"wash", "washes", "washed", "the {things}"},
    {"find", "finds", "found", "~ {color} {thing}"},
    {"go", "goes", "went", "to the {errand}"},
};

constexpr Animal kAnimals[] = {
    {"cat", "cats", "meow", 4, "in a house", "in houses"},
    {"dog", "dogs", "woof", 4, "in a doghouse", "in doghouses"},
    {"cow", "cows", "moo", 4, "on a farm", "on farms"},
    {"duck", "ducks", "quack", 2, "on a pond", "on ponds"},
    {"sheep", "sheep", "baa", 4, "in a field", "in fields"},
    {"pig", "pigs", "oink", 4, "in a pen", "in pens"},
    {"horse", "horses", "neigh", 4, "in a stable", "in stables"},
    {"hen", "hens", "cluck", 2, "in a coop", "in coops"},
    {"owl", "owls", "hoot", 2, "in a tree", "in trees"},
    {"frog", "frogs", "ribbit", 4, "in a pond", "in ponds"},
    {"lion", "lions", "roar", 4, "on the plains", "on the plains"},
    {"bird", "birds", "tweet", 2, "in a nest", "in nests"},
    {"bee", "bees", "buzz", 6, "in a hive", "in hives"},
    {"fish", "fish", "", 0, "in the water", "in the water"},
    {"spider", "spiders", "", 8, "in a web", "in webs"},
    {"bear", "bears", "growl", 4, "in a cave", "in caves"},
    {"mouse", "mice", "squeak", 4, "in a hole", "in holes"},
    {"snake", "snakes", "hiss", 0, "in the grass", "in the grass"},
    {"wolf", "wolves", "howl", 4, "in the forest", "in the forest"},
    {"rabbit", "rabbits", "", 4, "in a burrow", "in burrows"},
    {"ant", "ants", "", 6, "in an anthill", "in anthills"},
    {"goat", "goats", "bleat", 4, "on a hill", "on hills"},
};

constexpr std::string_view kDays[] = {"Monday", "Tuesday", "Wednesday", "Thursday",
                                      "Friday", "Saturday", "Sunday"};
constexpr std::string_view kMonths[] = {"January", "February", "March",     "April",
                                        "May",     "June",     "July",      "August",
                                        "September", "October", "November", "December"};
constexpr std::string_view kSeasons[] = {"winter", "spring", "summer", "autumn"};
constexpr std::string_view kSeasonWeather[] = {"cold and snowy", "warm and rainy", "hot and sunny",
                                               "cool and windy"};
constexpr std::string_view kSeasonSign[] = {"the ponds freeze", "the flowers grow",
                                            "the children swim in the lake", "the leaves fall"};

struct ColorFact {
  std::string_view thing, verb, color;
};
constexpr ColorFact kColorFacts[] = {
    {"the sky", "is", "blue"},       {"grass", "is", "green"},     {"snow", "is", "white"},
    {"the sun", "is", "yellow"},     {"a banana", "is", "yellow"}, {"coal", "is", "black"},
    {"milk", "is", "white"},         {"the sea", "is", "blue"},    {"a carrot", "is", "orange"},
    {"strawberries", "are", "red"},  {"leaves", "are", "green"},   {"clouds", "are", "white"},
    {"tomatoes", "are", "red"},      {"lemons", "are", "yellow"},  {"crows", "are", "black"}};

// ---------------------------------------------------------------------------
// Text helpers.

std::string number_words(int n) {
  static constexpr std::string_view kOnes[] = {
      "zero",    "one",     "two",       "three",    "four",     "five",    "six",
      "seven",   "eight",   "nine",      "ten",      "eleven",   "twelve",  "thirteen",
      "fourteen", "fifteen", "sixteen",  "seventeen", "eighteen", "nineteen"};
  static constexpr std::string_view kTens[] = {"",      "",      "twenty",  "thirty", "forty",
                                               "fifty", "sixty", "seventy", "eighty", "ninety"};
  INTELLECT_CHECK(n >= 0 && n < 1000, "number ", n);
  if (n < 20) return std::string(kOnes[n]);
  if (n < 100) {
    std::string s(kTens[n / 10]);
    if (n % 10) s += "-" + std::string(kOnes[n % 10]);
    return s;
  }
  std::string s = std::string(kOnes[n / 100]) + " hundred";
  if (n % 100) s += " and " + number_words(n % 100);
  return s;
}

// "no apples", "one apple", "three apples": the count decides the noun form.
std::string count_of(int n, const Noun& noun) {
  if (n == 0) return "no " + std::string(noun.many);
  if (n == 1) return "one " + std::string(noun.one);
  return number_words(n) + " " + std::string(noun.many);
}

std::string capitalized(std::string s) {
  for (char& c : s) {
    if (std::isalpha(static_cast<unsigned char>(c))) {
      c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      break;
    }
  }
  return s;
}

// Capitalizes every word but the small ones ("Emma and the Red Kite").
std::string title_case(const std::string& s) {
  static constexpr std::string_view kSmall[] = {"a", "an", "and", "the", "of"};
  std::string out;
  size_t i = 0;
  while (i <= s.size()) {
    size_t end = s.find(' ', i);
    if (end == std::string::npos) end = s.size();
    std::string word = s.substr(i, end - i);
    const bool small = std::find(std::begin(kSmall), std::end(kSmall), word) != std::end(kSmall);
    if (!out.empty()) out += ' ';
    out += (small && i > 0) ? word : capitalized(word);
    i = end + 1;
  }
  return out;
}

// Templates write the indefinite article as '~'; the word that follows decides
// between "a" and "an" (the vocabulary has no "hour"/"unicorn" exceptions).
void resolve_articles(std::string& s) {
  std::string out;
  out.reserve(s.size() + 16);
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '~') {
      out += s[i];
      continue;
    }
    size_t j = i + 1;
    while (j < s.size() && s[j] == ' ') ++j;
    const char next = j < s.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(s[j]))) : 'x';
    out += std::string_view("aeiou").find(next) != std::string_view::npos ? "an" : "a";
  }
  s = std::move(out);
}

// Named values for a template: the story's characters, pronouns and objects.
class Vars {
 public:
  void set(std::string_view key, std::string value) {
    for (auto& kv : items_)
      if (kv.first == key) {
        kv.second = std::move(value);
        return;
      }
    items_.emplace_back(key, std::move(value));
  }
  const std::string* get(std::string_view key) const {
    for (const auto& kv : items_)
      if (kv.first == key) return &kv.second;
    return nullptr;
  }

 private:
  std::vector<std::pair<std::string_view, std::string>> items_;
};

// A fresh random word for a slot no variable names.
std::string random_word(std::string_view key, Rng& r) {
  if (key == "color") return std::string(r.pick(kColors));
  if (key == "adj") return std::string(r.pick(kAdjectives));
  if (key == "emotion") return std::string(r.pick(kEmotions));
  if (key == "nice") return std::string(r.pick(kNice));
  if (key == "home") return std::string(r.pick(kHomes));
  if (key == "landmark") return std::string(r.pick(kLandmarks));
  if (key == "spot") return std::string(r.pick(kSpots));
  if (key == "time") return std::string(r.pick(kTimes));
  if (key == "outdoor") return std::string(r.pick(kOutdoors));
  if (key == "water") return std::string(r.pick(kWaters));
  if (key == "low") return std::string(r.pick(kLow));
  if (key == "sky") return std::string(r.pick(kSky));
  if (key == "errand") return std::string(r.pick(kErrands));
  if (key == "seat") return std::string(r.pick(kSeats));
  if (key == "tall") return std::string(r.pick(kTall));
  if (key == "room") return std::string(r.pick(kRooms));
  if (key == "song") return std::string(r.pick(kSongs));
  if (key == "food") return std::string(r.pick(kFoods).one);
  if (key == "thing") return std::string(r.pick(kThings).one);
  if (key == "things") return std::string(r.pick(kThings).many);
  if (key == "animal") return std::string(r.pick(kAnimals).one);
  if (key == "animals") return std::string(r.pick(kAnimals).many);
  if (key == "relative") return std::string(r.pick(kRelatives));
  if (key == "day") return std::string(r.pick(kDays));
  INTELLECT_CHECK(false, "unknown template slot '", key, "'");
  return {};
}

// Expands {slot}s: a variable if one is set, otherwise a random word of that
// kind. {Slot} gives the same value capitalized.
std::string fill(std::string_view tmpl, const Vars& vars, Rng& r) {
  std::string out;
  out.reserve(tmpl.size() + 32);
  size_t i = 0;
  while (i < tmpl.size()) {
    const size_t open = tmpl.find('{', i);
    if (open == std::string_view::npos) {
      out += tmpl.substr(i);
      break;
    }
    out += tmpl.substr(i, open - i);
    const size_t close = tmpl.find('}', open);
    INTELLECT_CHECK(close != std::string_view::npos, "unclosed slot in '", tmpl, "'");
    std::string_view key = tmpl.substr(open + 1, close - open - 1);
    std::string value;
    if (const std::string* v = vars.get(key)) {
      value = *v;
    } else if (std::isupper(static_cast<unsigned char>(key[0]))) {
      std::string lower(key);
      lower[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(lower[0])));
      const std::string* lv = vars.get(lower);
      value = capitalized(lv ? *lv : random_word(lower, r));
    } else {
      value = random_word(key, r);
    }
    out += value;
    i = close + 1;
  }
  return out;
}

// Collects sentences into paragraphs: each sentence gets its articles resolved
// and its first letter capitalized.
class Doc {
 public:
  void title(const std::string& t) {
    std::string s = t;
    resolve_articles(s);
    text_ += title_case(s);
    text_ += "\n\n";
  }
  void sentence(std::string s) {
    resolve_articles(s);
    if (!para_.empty()) para_ += para_.back() == '\n' ? "" : " ";
    para_ += capitalized(std::move(s));
  }
  // A sentence on its own line (questions and answers, lists).
  void line(std::string s) {
    resolve_articles(s);
    if (!para_.empty() && para_.back() != '\n') para_ += '\n';
    // "Q: " / "A: " prefixes: the sentence after them starts with a capital.
    const size_t start = (s.size() > 3 && s[1] == ':' && s[2] == ' ') ? 3 : 0;
    para_ += s.substr(0, start) + capitalized(s.substr(start));
    para_ += '\n';
  }
  void end_paragraph() {
    if (para_.empty()) return;
    while (!para_.empty() && para_.back() == '\n') para_.pop_back();
    text_ += para_;
    text_ += "\n\n";
    para_.clear();
  }
  std::string finish() {
    end_paragraph();
    while (!text_.empty() && text_.back() == '\n') text_.pop_back();
    text_ += '\n';
    return std::move(text_);
  }

 private:
  std::string text_, para_;
};

void set_pronouns(Vars& v, bool female, const char* prefix) {
  const std::string p(prefix);
  // Keys must outlive Vars (it stores string_views): use static storage.
  static const std::string kKeys[2][3] = {{"he", "him", "his"}, {"fhe", "fhim", "fhis"}};
  const auto& keys = kKeys[p.empty() ? 0 : 1];
  v.set(keys[0], female ? "she" : "he");
  v.set(keys[1], female ? "her" : "him");
  v.set(keys[2], female ? "her" : "his");
}

// ---------------------------------------------------------------------------
// Paragraph kinds.

void arithmetic_fact(Doc& d, Rng& r) {
  switch (r.below(7)) {
    case 0: {
      const int a = r.range(0, 20), b = r.range(0, 20);
      d.sentence(number_words(a) + " plus " + number_words(b) + " is " + number_words(a + b) + ".");
      break;
    }
    case 1: {
      const int a = r.range(0, 20), b = r.range(0, a);
      d.sentence(number_words(a) + " minus " + number_words(b) + " is " + number_words(a - b) + ".");
      break;
    }
    case 2: {
      const int a = r.range(1, 10), b = r.range(1, 10);
      d.sentence(number_words(a) + " times " + number_words(b) + " is " + number_words(a * b) + ".");
      break;
    }
    case 3: {
      const int a = r.range(1, 20);
      if (r.chance(50))
        d.sentence("twice " + number_words(a) + " is " + number_words(2 * a) + ".");
      else
        d.sentence("half of " + number_words(2 * a) + " is " + number_words(a) + ".");
      break;
    }
    case 4: {
      const int a = r.range(0, 30), b = r.range(0, 30);
      if (a == b)
        d.sentence(number_words(a) + " is equal to " + number_words(b) + ".");
      else
        d.sentence(number_words(a) + " is " + (a > b ? "more" : "less") + " than " + number_words(b) + ".");
      break;
    }
    case 5: {
      const int a = r.range(1, 50);
      if (r.chance(50))
        d.sentence("the number after " + number_words(a) + " is " + number_words(a + 1) + ".");
      else
        d.sentence("the number before " + number_words(a) + " is " + number_words(a - 1) + ".");
      break;
    }
    default: {
      const int a = r.range(0, 40);
      d.sentence(number_words(a) + " is an " + (a % 2 ? "odd" : "even") + " number.");
      break;
    }
  }
}

void sums_paragraph(Doc& d, Rng& r) {
  static constexpr std::string_view kOpen[] = {"let us do some sums.", "here are some number facts.",
                                               "we can add and take away.", "practice makes perfect."};
  d.sentence(std::string(r.pick(kOpen)));
  const int n = r.range(4, 8);
  for (int i = 0; i < n; ++i) arithmetic_fact(d, r);
  if (r.chance(40)) {
    // The same kind of fact in digits, so digits and words line up.
    const int a = r.range(0, 20), b = r.range(0, 20);
    if (r.chance(50))
      d.sentence("in numbers, " + std::to_string(a) + " + " + std::to_string(b) + " = " +
                 std::to_string(a + b) + ".");
    else
      d.sentence("in numbers, " + std::to_string(std::max(a, b)) + " - " + std::to_string(std::min(a, b)) +
                 " = " + std::to_string(std::max(a, b) - std::min(a, b)) + ".");
  }
  d.end_paragraph();
}

void counting_paragraph(Doc& d, Rng& r) {
  const int kind = static_cast<int>(r.below(3));
  const int len = r.range(4, 8);
  std::string s;
  if (kind == 0) {
    const int start = r.range(0, 20);
    s = "count with me: ";
    for (int i = 0; i < len; ++i) s += (i ? ", " : "") + number_words(start + i);
  } else if (kind == 1) {
    const int step = r.range(2, 5), start = step * r.range(0, 3);
    s = "count by " + number_words(step) + "s: ";
    for (int i = 0; i < len; ++i) s += (i ? ", " : "") + number_words(start + step * i);
  } else {
    const int start = r.range(len, 20);
    s = "count backwards from " + number_words(start) + ": ";
    for (int i = 0; i < len; ++i) s += (i ? ", " : "") + number_words(start - i);
  }
  d.sentence(s + ".");
  const int extra = r.range(1, 3);
  for (int i = 0; i < extra; ++i) arithmetic_fact(d, r);
  d.end_paragraph();
}

void calendar_paragraph(Doc& d, Rng& r) {
  const int n = r.range(3, 6);
  for (int i = 0; i < n; ++i) {
    const int day = r.range(0, 6), month = r.range(0, 11);
    const int season = (month + 1) % 12 / 3;  // Dec-Feb winter, Mar-May spring, ...
    switch (r.below(9)) {
      case 0:
        d.sentence("after " + std::string(kDays[day]) + " comes " + std::string(kDays[(day + 1) % 7]) + ".");
        break;
      case 1:
        d.sentence("the day before " + std::string(kDays[day]) + " is " +
                   std::string(kDays[(day + 6) % 7]) + ".");
        break;
      case 2:
        d.sentence("if today is " + std::string(kDays[day]) + ", tomorrow is " +
                   std::string(kDays[(day + 1) % 7]) + " and yesterday was " +
                   std::string(kDays[(day + 6) % 7]) + ".");
        break;
      case 3: {
        const int k = r.range(2, 6);
        d.sentence(number_words(k) + " days after " + std::string(kDays[day]) + " is " +
                   std::string(kDays[(day + k) % 7]) + ".");
        break;
      }
      case 4:
        d.sentence(std::string(kMonths[(month + 1) % 12]) + " comes after " + std::string(kMonths[month]) + ".");
        break;
      case 5:
        d.sentence(std::string(kMonths[month]) + " is in " + std::string(kSeasons[season]) + ".");
        break;
      case 6:
        d.sentence("in " + std::string(kSeasons[season]) + ", it is " + std::string(kSeasonWeather[season]) +
                   " and " + std::string(kSeasonSign[season]) + ".");
        break;
      case 7: {
        const int h = r.range(1, 12), k = r.range(1, 9);
        d.sentence("if it is " + number_words(h) + " o'clock now, in " + count_of(k, {"hour", "hours"}) +
                   " it will be " + number_words((h + k - 1) % 12 + 1) + " o'clock.");
        break;
      }
      default:
        if (r.chance(50)) {
          d.sentence("there are seven days in a week and twelve months in a year.");
        } else {
          std::string s = "the days of the week are ";
          for (int k = 0; k < 7; ++k) s += std::string(k == 0 ? "" : k == 6 ? " and " : ", ") + std::string(kDays[k]);
          d.sentence(s + ".");
        }
    }
  }
  d.end_paragraph();
}

void animal_fact(Doc& d, Rng& r, const Animal& a) {
  const std::string one(a.one), many(a.many);
  const bool plural = r.chance(40);
  switch (r.below(4)) {
    case 0:
      if (!a.sound.empty()) {
        d.sentence(plural ? many + " say " + std::string(a.sound) + "."
                          : "~ " + one + " says " + std::string(a.sound) + ".");
        break;
      }
      [[fallthrough]];
    case 1: {
      const std::string legs = a.legs == 0 ? "no legs" : number_words(a.legs) + " legs";
      d.sentence(plural ? many + " have " + legs + "." : "~ " + one + " has " + legs + ".");
      break;
    }
    case 2:
      d.sentence(plural ? many + " live " + std::string(a.home_many) + "."
                        : "~ " + one + " lives " + std::string(a.home_one) + ".");
      break;
    default: {
      // Multiplication with a reason: the legs of several animals.
      const int k = r.range(2, 9);
      if (a.legs == 0) {
        d.sentence(count_of(k, {a.one, a.many}) + " have no legs at all.");
      } else {
        d.sentence("one " + one + " has " + number_words(a.legs) + " legs, so " + count_of(k, {a.one, a.many}) +
                   " have " + number_words(k * a.legs) + " legs.");
      }
    }
  }
}

void animals_paragraph(Doc& d, Rng& r) {
  const int n = r.range(3, 6);
  for (int i = 0; i < n; ++i) animal_fact(d, r, r.pick(kAnimals));
  if (r.chance(50)) {
    const ColorFact& c = r.pick(kColorFacts);
    d.sentence(std::string(c.thing) + " " + std::string(c.verb) + " " + std::string(c.color) + ".");
  }
  d.end_paragraph();
}

// Present, past and future sentences whose verb form must agree with the
// subject and the time word.
void scene_paragraph(Doc& d, Rng& r) {
  Vars none;
  const int n = r.range(3, 6);
  for (int i = 0; i < n; ++i) {
    std::string subject;
    bool singular = true;
    switch (r.below(8)) {
      case 0: subject = "the " + std::string(r.pick(kAnimals).one); break;
      case 1: subject = "the " + std::string(r.pick(kAnimals).many), singular = false; break;
      case 2: subject = "~ {adj} " + std::string(r.pick(kAnimals).one); break;
      case 3: subject = std::string(r.chance(50) ? r.pick(kGirlNames) : r.pick(kBoyNames)); break;
      case 4:
        subject = std::string(r.pick(kGirlNames)) + " and " + std::string(r.pick(kBoyNames)), singular = false;
        break;
      case 5: subject = "my " + std::string(r.pick(kRelatives)); break;
      case 6: subject = "my " + std::string(r.pick(kRelativesMany)), singular = false; break;
      default: {
        static constexpr std::string_view kPronouns[] = {"I", "you", "we", "they", "he", "she"};
        const std::string_view p = r.pick(kPronouns);
        subject = std::string(p);
        singular = (p == "he" || p == "she");
      }
    }
    const Verb& v = r.pick(kVerbs);
    const std::string comp = fill(v.complement, none, r);
    std::string s;
    switch (r.below(3)) {
      case 0: {
        static constexpr std::string_view kNow[] = {"every day", "in the morning", "on {day}s", "today"};
        s = fill(r.pick(kNow), none, r) + ", " + subject + " " +
            std::string(singular ? v.third : v.base) + " " + comp + ".";
        break;
      }
      case 1: {
        static constexpr std::string_view kPast[] = {"yesterday", "last {day}", "long ago", "last night"};
        s = fill(r.pick(kPast), none, r) + ", " + subject + " " + std::string(v.past) + " " + comp + ".";
        break;
      }
      default: {
        static constexpr std::string_view kLater[] = {"tomorrow", "next {day}", "soon", "one day"};
        s = fill(r.pick(kLater), none, r) + ", " + subject + " will " + std::string(v.base) + " " + comp + ".";
      }
    }
    d.sentence(fill(s, none, r));
  }
  if (r.chance(50)) {
    const Animal& an = r.pick(kAnimals);
    const int k = r.range(0, 9);
    const std::string where = fill("the {outdoor}", none, r);
    if (k == 1)
      d.sentence("there is one " + std::string(an.one) + " in " + where + ".");
    else
      d.sentence("there are " + count_of(k, {an.one, an.many}) + " in " + where + ".");
  }
  if (r.chance(40)) {
    const Noun& f = r.pick(kFoods);
    const int price = r.range(1, 9), k = r.range(2, 9);
    const std::string name(r.pick(kGirlNames));
    d.sentence("one " + std::string(f.one) + " costs " + count_of(price, {"coin", "coins"}) + ". " + name +
               " bought " + number_words(k) + " " + std::string(f.many) + " and paid " +
               count_of(price * k, {"coin", "coins"}) + ".");
  }
  d.end_paragraph();
}

void quiz_paragraph(Doc& d, Rng& r) {
  const int n = r.range(2, 4);
  for (int i = 0; i < n; ++i) {
    switch (r.below(5)) {
      case 0: {
        const int a = r.range(0, 12), b = r.range(0, 12);
        d.line("Q: What is " + number_words(a) + " plus " + number_words(b) + "?");
        d.line("A: " + capitalized(number_words(a)) + " plus " + number_words(b) + " is " + number_words(a + b) + ".");
        break;
      }
      case 1: {
        const Animal* a = &r.pick(kAnimals);
        while (a->sound.empty()) a = &r.pick(kAnimals);
        d.line("Q: What does ~ " + std::string(a->one) + " say?");
        d.line("A: ~ " + std::string(a->one) + " says " + std::string(a->sound) + ".");
        break;
      }
      case 2: {
        const Animal& a = r.pick(kAnimals);
        d.line("Q: How many legs does ~ " + std::string(a.one) + " have?");
        d.line("A: ~ " + std::string(a.one) + " has " + (a.legs ? number_words(a.legs) : "no") + " legs.");
        break;
      }
      case 3: {
        const int day = r.range(0, 6);
        d.line("Q: What day comes after " + std::string(kDays[day]) + "?");
        d.line("A: " + std::string(kDays[(day + 1) % 7]) + " comes after " + std::string(kDays[day]) + ".");
        break;
      }
      default: {
        const ColorFact& c = r.pick(kColorFacts);
        d.line("Q: What color " + std::string(c.verb) + " " + std::string(c.thing) + "?");
        d.line("A: " + capitalized(std::string(c.thing)) + " " + std::string(c.verb) + " " + std::string(c.color) + ".");
      }
    }
  }
  d.end_paragraph();
}

// A short story whose names, pronouns, objects and counts recur, followed
// sometimes by questions that can only be answered from the story.
void story(Doc& d, Rng& r) {
  Vars v;
  const bool female = r.chance(50);
  const std::string_view name = female ? r.pick(kGirlNames) : r.pick(kBoyNames);
  const bool ffemale = r.chance(50);
  std::string_view friend_name = ffemale ? r.pick(kGirlNames) : r.pick(kBoyNames);
  while (friend_name == name) friend_name = ffemale ? r.pick(kGirlNames) : r.pick(kBoyNames);
  const bool animal_hero = r.chance(50);
  const std::string_view kind = animal_hero ? r.pick(kAnimalKinds) : female ? r.pick(kGirlKinds) : r.pick(kBoyKinds);
  const std::string_view fkind = r.chance(50) ? r.pick(kAnimalKinds) : ffemale ? r.pick(kGirlKinds) : r.pick(kBoyKinds);
  const Noun& thing = r.pick(kThings);
  const Noun& food = r.pick(kFoods);

  v.set("N", std::string(name));
  v.set("F", std::string(friend_name));
  set_pronouns(v, female, "");
  set_pronouns(v, ffemale, "f");
  v.set("kind", std::string(kind));
  v.set("fkind", std::string(fkind));
  v.set("adj", std::string(r.pick(kAdjectives)));
  v.set("fadj", std::string(r.pick(kAdjectives)));
  v.set("home", std::string(r.pick(kHomes)));
  v.set("landmark", std::string(r.pick(kLandmarks)));
  v.set("thing", std::string(thing.one));
  v.set("things", std::string(thing.many));
  v.set("color", std::string(r.pick(kColors)));
  v.set("spot", std::string(r.pick(kSpots)));
  v.set("nice", std::string(r.pick(kNice)));
  v.set("time", std::string(r.pick(kTimes)));
  const Verb& hobby = kVerbs[r.below(std::size(kVerbs) - 2)];  // not "find"/"go": they read oddly as hobbies
  v.set("act", std::string(hobby.base) + " " + fill(hobby.complement, v, r));

  auto say = [&](std::string_view t) { d.sentence(fill(t, v, r)); };

  static constexpr std::string_view kTitles[] = {"{N} and the {color} {thing}", "the {adj} {kind}",
                                                 "the story of {N}", "{N} and {F}", "~ {nice} {thing}"};
  d.title(fill(r.pick(kTitles), v, r));

  static constexpr std::string_view kOpenings[] = {
      "once upon a time, there was ~ {adj} {kind} named {N}.",
      "there once lived ~ {adj} {kind} called {N}.",
      "long ago, there lived ~ {adj} {kind}. {His} name was {N}."};
  say(r.pick(kOpenings));
  say("{N} lived in ~ {home} near the {landmark}.");
  say("every {time}, {he} liked to {act}.");
  say("{His} best friend was ~ {fadj} {fkind} named {F}.");
  d.end_paragraph();

  static constexpr std::string_view kFinds[] = {"one day, {N} found ~ {color} {thing} under the {spot}.",
                                                "one {time}, {N} found ~ {color} {thing} by the {landmark}."};
  say(r.pick(kFinds));
  say("{he} was very {emotion}.");
  say("\"What ~ {nice} {thing}!\" said {N}.");
  if (r.chance(60)) {
    say("{he} ran to show it to {F}.");
    say("\"Look, {F}! I found ~ {color} {thing},\" said {N}.");
    say("\"It is very {nice},\" said {F}. \"Can I hold it?\"");
    say(r.chance(50) ? "\"Yes, you can,\" said {N}. {F} held the {thing} for a while and gave it back."
                     : "\"Not now,\" said {N}, and {he} kept the {thing} in {his} pocket.");
  }
  d.end_paragraph();

  // Arithmetic inside the story: the answer has to follow from the numbers.
  int final_count = 0;
  switch (r.below(3)) {
    case 0: {
      const int a = r.range(1, 9), b = r.range(1, 9);
      final_count = a + b;
      d.sentence(fill("later, {N} had ", v, r) + count_of(a, food) + ".");
      d.sentence(fill("{F} gave {him} ", v, r) + (b == 1 ? "one more" : number_words(b) + " more") + ".");
      d.sentence(fill("now {N} had ", v, r) + count_of(final_count, food) + ".");
      break;
    }
    case 1: {
      const int a = r.range(2, 12), b = r.range(1, a);
      final_count = a - b;
      d.sentence(fill("later, {N} had ", v, r) + count_of(a, food) + ".");
      d.sentence(fill("{he} gave ", v, r) + number_words(b) + fill(" to {F}, so {he} had ", v, r) +
                 count_of(final_count, food) + " left.");
      break;
    }
    default: {
      const int k = r.range(2, 5), m = r.range(2, 6);
      final_count = k * m;
      d.sentence(fill("later, {N} and {F} picked ", v, r) + std::string(food.many) + ".");
      d.sentence("they filled " + count_of(k, {"basket", "baskets"}) + " with " + number_words(m) + " " +
                 std::string(food.many) + " in each basket.");
      d.sentence(fill("so {N} had ", v, r) + count_of(final_count, food) + " in all.");
    }
  }
  d.end_paragraph();

  static constexpr std::string_view kEndings[] = {
      "when the sun went down, {N} went home to {his} {home}.",
      "in the evening, {N} said goodbye to {F} and went home."};
  say(r.pick(kEndings));
  say("{he} put the {color} {thing} next to {his} bed.");
  say("that night, {N} dreamed about {color} {things}.");
  say("the end.");
  d.end_paragraph();

  if (r.chance(60)) {
    d.line("Questions about the story:");
    const uint32_t first = r.below(5);
    const int count = r.range(2, 4);
    for (int i = 0; i < count; ++i) {
      switch ((first + static_cast<uint32_t>(i)) % 5) {
        case 0:
          d.line(fill("Q: What was the name of the {kind}?", v, r));
          d.line(fill("A: The {kind} was named {N}.", v, r));
          break;
        case 1:
          d.line(fill("Q: Where did {N} live?", v, r));
          d.line(fill("A: {N} lived near the {landmark}.", v, r));
          break;
        case 2:
          d.line(fill("Q: What did {N} find?", v, r));
          d.line(fill("A: {N} found ~ {color} {thing}.", v, r));
          break;
        case 3:
          d.line(fill("Q: Who was {N}'s best friend?", v, r));
          d.line(fill("A: {His} best friend was {F}.", v, r));
          break;
        default:
          d.line(fill("Q: How many ", v, r) + std::string(food.many) + fill(" did {N} have at the end?", v, r));
          d.line(fill("A: {N} had ", v, r) + count_of(final_count, food) + ".");
      }
    }
    d.end_paragraph();
  }
}

}  // namespace

std::string generate_document(uint64_t seed, uint64_t index) {
  Rng r(seed, index);
  Doc d;
  if (r.chance(55)) {
    story(d, r);
    if (r.chance(25)) quiz_paragraph(d, r);
  } else {
    using Para = void (*)(Doc&, Rng&);
    static constexpr Para kParas[] = {sums_paragraph,   counting_paragraph, calendar_paragraph,
                                      animals_paragraph, scene_paragraph,   quiz_paragraph};
    static constexpr std::string_view kTitles[] = {"sums",   "counting", "days and months",
                                                   "animals", "every day", "questions and answers"};
    const uint32_t topic = r.below(std::size(kParas));
    d.title(std::string(kTitles[topic]));
    kParas[topic](d, r);
    const int more = r.range(1, 3);
    for (int i = 0; i < more; ++i) kParas[r.below(std::size(kParas))](d, r);
  }
  return d.finish();
}

// ---------------------------------------------------------------------------
// Writing a corpus directory.

namespace {

// Packs whole documents into shards of at most shard_tokens tokens.
class ShardPacker {
 public:
  ShardPacker(std::string dir, std::string prefix, uint64_t shard_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), cap_(shard_tokens) {}

  void add(std::span<const uint32_t> doc) {
    tokens_ += doc.size();
    if (!buf_.empty() && buf_.size() + doc.size() > cap_) flush();
    // Only a document longer than a whole shard is split, in shard-sized pieces.
    while (doc.size() > cap_) {
      write(doc.first(cap_));
      doc = doc.subspan(cap_);
    }
    buf_.insert(buf_.end(), doc.begin(), doc.end());
  }
  void flush() {
    if (!buf_.empty()) write(buf_);
    buf_.clear();
  }
  uint64_t tokens() const { return tokens_; }
  const std::vector<std::string>& paths() const { return paths_; }
  const nlohmann::json& shard_list() const { return list_; }

 private:
  void write(std::span<const uint32_t> tokens) {
    char name[64];
    std::snprintf(name, sizeof(name), "%s_%06zu.bin", prefix_.c_str(), paths_.size());
    const std::string path = (std::filesystem::path(dir_) / name).string();
    write_token_shard(path, tokens);
    paths_.push_back(path);
    list_.push_back({{"file", name}, {"tokens", tokens.size()}});
  }

  std::string dir_, prefix_;
  uint64_t cap_;
  std::vector<uint32_t> buf_;
  uint64_t tokens_ = 0;
  std::vector<std::string> paths_;
  nlohmann::json list_ = nlohmann::json::array();
};

// train_NNNNNN.bin or val_NNNNNN.bin: the names write_corpus gives shards.
bool is_shard_name(const std::string& name) {
  for (std::string_view prefix : {"train_", "val_"}) {
    if (name.size() != prefix.size() + 10 || name.compare(0, prefix.size(), prefix) != 0) continue;
    if (name.compare(prefix.size() + 6, 4, ".bin") != 0) continue;
    return std::all_of(name.begin() + static_cast<long>(prefix.size()),
                       name.begin() + static_cast<long>(prefix.size()) + 6,
                       [](char c) { return c >= '0' && c <= '9'; });
  }
  return false;
}

std::string short_count(uint64_t n) {
  char s[32];
  if (n >= 1000000)
    std::snprintf(s, sizeof(s), "%.1fM", static_cast<double>(n) / 1e6);
  else if (n >= 1000)
    std::snprintf(s, sizeof(s), "%.1fk", static_cast<double>(n) / 1e3);
  else
    std::snprintf(s, sizeof(s), "%llu", static_cast<unsigned long long>(n));
  return s;
}

}  // namespace

CorpusSummary write_corpus(const CorpusOptions& o, std::ostream* progress) {
  namespace fs = std::filesystem;
  if (o.out_dir.empty()) fail("write_corpus: no output directory given");
  if (o.shard_tokens < 1 || o.shard_tokens > static_cast<uint64_t>(INT32_MAX))
    fail("shard size must be between 1 and ", INT32_MAX, " tokens, got ", o.shard_tokens);
  const bool from_inputs = !o.inputs.empty();
  uint64_t train_docs = o.docs, val_docs = o.val_docs;
  if (from_inputs) {
    if (val_docs >= o.inputs.size())
      fail(o.inputs.size(), " input files leave none for training after holding out ", val_docs,
           " for validation; give more files or a smaller --val-docs");
    train_docs = o.inputs.size() - val_docs;
  } else if (train_docs == 0) {
    fail("a corpus needs at least one training document");
  }

  make_dirs(o.out_dir);
  const std::string manifest_path = (fs::path(o.out_dir) / "manifest.json").string();
  // A manifest vouches for the shards beside it, so it goes before they change.
  std::error_code ec;
  fs::remove(manifest_path, ec);
  if (ec) fail("cannot remove old manifest '", manifest_path, "': ", ec.message());

  const ByteTokenizer tok;
  std::vector<uint32_t> doc;
  auto document = [&](uint64_t i, bool val) {
    std::string text;
    if (from_inputs)
      text = read_text_file(o.inputs[val ? train_docs + i : i]);
    else
      text = generate_document(o.seed, val ? kValDocIndexBase + i : i);
    doc.clear();
    doc.push_back(ByteTokenizer::kBos);
    const std::vector<uint32_t> bytes = tok.encode(text);
    doc.insert(doc.end(), bytes.begin(), bytes.end());
    doc.push_back(ByteTokenizer::kEos);
  };

  const uint64_t all_docs = train_docs + val_docs;
  const uint64_t report_every = std::max<uint64_t>(1, all_docs / 10);
  uint64_t done = 0;
  auto report = [&](uint64_t tokens) {
    ++done;
    if (progress && (done % report_every == 0 || done == all_docs))
      *progress << "make_corpus: " << done << "/" << all_docs << " documents, " << short_count(tokens)
                << " tokens\n"
                << std::flush;
  };

  ShardPacker train(o.out_dir, "train", o.shard_tokens), val(o.out_dir, "val", o.shard_tokens);
  for (uint64_t i = 0; i < train_docs; ++i) {
    document(i, false);
    train.add(doc);
    report(train.tokens());
  }
  train.flush();
  for (uint64_t i = 0; i < val_docs; ++i) {
    document(i, true);
    val.add(doc);
    report(train.tokens() + val.tokens());
  }
  val.flush();

  // Shards of an earlier, larger corpus in this directory would otherwise be
  // picked up by a loader given the directory.
  std::set<std::string> written(train.paths().begin(), train.paths().end());
  written.insert(val.paths().begin(), val.paths().end());
  for (const auto& entry : fs::directory_iterator(o.out_dir)) {
    const std::string name = entry.path().filename().string();
    if (is_shard_name(name) && !written.count(entry.path().string())) {
      fs::remove(entry.path(), ec);
      if (ec) fail("cannot remove stale shard '", entry.path().string(), "': ", ec.message());
      if (progress) *progress << "make_corpus: removed stale shard " << entry.path().string() << "\n";
    }
  }

  nlohmann::json m;
  m["format"] = "llm.c Llama-3 token shards (magic 20240801, version 7, uint32 tokens)";
  m["tokenizer"] = {{"kind", "byte"}, {"vocab_size", ByteTokenizer::kVocab},
                    {"bos", ByteTokenizer::kBos}, {"eos", ByteTokenizer::kEos}};
  m["document_framing"] = "BOS + bytes + EOS";
  if (from_inputs) {
    m["generator"] = "input files";
    m["inputs"] = o.inputs;
  } else {
    m["generator"] = "intellect synthetic_corpus v1";
    m["seed"] = o.seed;
    m["val_doc_index_base"] = kValDocIndexBase;
  }
  m["shard_tokens"] = o.shard_tokens;
  m["train"] = {{"docs", train_docs}, {"tokens", train.tokens()}, {"shards", train.shard_list()}};
  m["val"] = {{"docs", val_docs}, {"tokens", val.tokens()}, {"shards", val.shard_list()}};
  m["total_tokens"] = train.tokens() + val.tokens();
  const std::string text = m.dump(2) + "\n";
  write_file_atomic(manifest_path, text.data(), text.size());

  CorpusSummary s;
  s.train_docs = train_docs;
  s.val_docs = val_docs;
  s.train_tokens = train.tokens();
  s.val_tokens = val.tokens();
  s.train_shards = train.paths();
  s.val_shards = val.paths();
  return s;
}

}  // namespace intellect
