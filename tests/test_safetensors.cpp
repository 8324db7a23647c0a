#include "ckpt/safetensors.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "util/error.h"
#include "util/file.h"

#ifndef INTELLECT_SHARED_DATA
#define INTELLECT_SHARED_DATA "../shared/data"
#endif

namespace st = intellect::st;
using intellect::Error;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / ("intellect_st_" + name)).string();
}

// A file from a literal header and `data_size` bytes of data (0, 1, 2, ...).
// `declared` overrides the header length field.
std::vector<uint8_t> build(const std::string& header, size_t data_size,
                           std::optional<uint64_t> declared = std::nullopt) {
  std::vector<uint8_t> out(8);
  uint64_t n = declared.value_or(header.size());
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  for (size_t i = 0; i < data_size; ++i) out.push_back(static_cast<uint8_t>(i));
  return out;
}

// Expects from_bytes to refuse the file with a message that names the file
// and contains `what`; returns the message.
std::string expect_refused(const std::vector<uint8_t>& bytes, const std::string& what) {
  try {
    st::File::from_bytes(bytes, "bad.safetensors");
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind("bad.safetensors: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "message: " << msg << "\nexpected to contain: " << what;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-intellect exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "file was accepted; expected an error containing: " << what;
  return "";
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

uint32_t bits_of(float f) { return std::bit_cast<uint32_t>(f); }
float from_bits(uint32_t b) { return std::bit_cast<float>(b); }

// Independent reference for round-to-nearest-even onto a narrower format:
// pick whichever of the two neighbouring encodings is closer, measured in
// double (exact for these magnitudes), ties to the even encoding.
uint16_t rne_reference(float x, uint16_t lo, float (*decode)(uint16_t)) {
  uint16_t hi = static_cast<uint16_t>(lo + 1);
  double dlo = std::fabs(static_cast<double>(x) - decode(lo));
  double dhi = std::fabs(static_cast<double>(x) - decode(hi));
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

}  // namespace

// ---------------------------------------------------------------- dtypes

TEST(SafetensorsDType, NamesSizesAndParsing) {
  struct Case {
    st::DType d;
    const char* name;
    size_t size;
  } cases[] = {{st::DType::BOOL, "BOOL", 1}, {st::DType::U8, "U8", 1},     {st::DType::I8, "I8", 1},
               {st::DType::I16, "I16", 2},   {st::DType::U16, "U16", 2},   {st::DType::F16, "F16", 2},
               {st::DType::BF16, "BF16", 2}, {st::DType::I32, "I32", 4},   {st::DType::U32, "U32", 4},
               {st::DType::F32, "F32", 4},   {st::DType::F64, "F64", 8},   {st::DType::I64, "I64", 8},
               {st::DType::U64, "U64", 8}};
  for (const auto& c : cases) {
    EXPECT_STREQ(st::dtype_name(c.d), c.name);
    EXPECT_EQ(st::dtype_size(c.d), c.size) << c.name;
    EXPECT_EQ(st::parse_dtype(c.name), c.d);
  }
  EXPECT_THROW(st::parse_dtype("f32"), Error);  // names are case-sensitive
  EXPECT_THROW(st::parse_dtype("F8_E4M3"), Error);
  EXPECT_THROW(st::parse_dtype(""), Error);
  EXPECT_NE(error_of([] { st::parse_dtype("Q4"); }).find("'Q4'"), std::string::npos);
}

TEST(SafetensorsDType, TensorInfoNumel) {
  st::TensorInfo t;
  EXPECT_EQ(t.numel(), 1);  // 0-d
  t.shape = {2, 3, 4};
  EXPECT_EQ(t.numel(), 24);
  t.shape = {5, 0, 7};
  EXPECT_EQ(t.numel(), 0);
  EXPECT_EQ(st::shape_str({2, 3}), "[2,3]");
  EXPECT_EQ(st::shape_str({}), "[]");
}

// ---------------------------------------------------------------- conversions

TEST(SafetensorsConvert, Bf16ExactValues) {
  EXPECT_EQ(st::f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(st::f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(st::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(st::f32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(st::f32_to_bf16(0.5f), 0x3F00);
  EXPECT_EQ(st::bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(st::bf16_to_f32(0xC040), -3.0f);
  EXPECT_EQ(st::bf16_to_f32(0x0001), from_bits(0x00010000));  // smallest subnormal survives
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x00010000)), 0x0001);
}

TEST(SafetensorsConvert, Bf16RoundsToNearestEven) {
  // 0x3F808000 is exactly halfway between 0x3F80 and 0x3F81: ties go to even.
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F808000)), 0x3F80);
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F818000)), 0x3F82);
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F808001)), 0x3F81);  // just above half
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3F807FFF)), 0x3F80);  // just below half
  EXPECT_EQ(st::f32_to_bf16(from_bits(0xBF808000)), 0xBF80);  // sign symmetric
  EXPECT_EQ(st::f32_to_bf16(from_bits(0xBF818000)), 0xBF82);
  // Carry across the exponent: 0x3FFF8000 (tie, odd lsb) -> 0x4000 = 2.0.
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x3FFF8000)), 0x4000);
}

TEST(SafetensorsConvert, Bf16InfNanOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(st::f32_to_bf16(inf), 0x7F80);
  EXPECT_EQ(st::f32_to_bf16(-inf), 0xFF80);
  EXPECT_EQ(st::f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);  // rounds up to inf
  EXPECT_EQ(st::f32_to_bf16(from_bits(0x7F7F7FFF)), 0x7F7F);               // stays finite
  EXPECT_TRUE(std::isinf(st::bf16_to_f32(0x7F80)));
  // NaN whose payload sits only in the dropped bits must stay NaN, not become inf.
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu}) {
    uint16_t h = st::f32_to_bf16(from_bits(nan));
    EXPECT_TRUE(std::isnan(st::bf16_to_f32(h))) << std::hex << nan;
    EXPECT_EQ(h >> 15, nan >> 31) << "sign kept";
  }
}

TEST(SafetensorsConvert, Bf16AllValuesRoundTrip) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    float f = st::bf16_to_f32(static_cast<uint16_t>(h));
    EXPECT_EQ(bits_of(f), h << 16);
    uint16_t back = st::f32_to_bf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(st::bf16_to_f32(back)));
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(SafetensorsConvert, Bf16MatchesReferenceOnRandomFloats) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = rng();
    float x = from_bits(b);
    if (!std::isfinite(x)) continue;
    uint16_t lo = static_cast<uint16_t>(b >> 16);  // truncation toward zero in magnitude
    if ((lo & 0x7FFF) == 0x7F7F) continue;           // the upper neighbour would be inf
    ASSERT_EQ(st::f32_to_bf16(x), rne_reference(x, lo, st::bf16_to_f32)) << std::hex << b;
  }
}

TEST(SafetensorsConvert, F16ExactValues) {
  EXPECT_EQ(st::f32_to_f16(0.0f), 0x0000);
  EXPECT_EQ(st::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(st::f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(st::f32_to_f16(-2.5f), 0xC100);
  EXPECT_EQ(st::f32_to_f16(65504.0f), 0x7BFF);               // largest finite
  EXPECT_EQ(st::f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(st::f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(st::f32_to_f16(1023 * std::ldexp(1.0f, -24)), 0x03FF);
  EXPECT_EQ(st::f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(st::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(st::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(st::f16_to_f32(0x83FF), -1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(st::f16_to_f32(0x3555), from_bits(0x3EAAA000));  // 0.33325195...
}

TEST(SafetensorsConvert, F16RoundsToNearestEven) {
  const float u = std::ldexp(1.0f, -24);  // one subnormal step
  EXPECT_EQ(st::f32_to_f16(0.5f * u), 0x0000);   // tie -> even (0)
  EXPECT_EQ(st::f32_to_f16(0.51f * u), 0x0001);
  EXPECT_EQ(st::f32_to_f16(1.5f * u), 0x0002);   // tie between 1 and 2 -> 2
  EXPECT_EQ(st::f32_to_f16(2.5f * u), 0x0002);   // tie between 2 and 3 -> 2
  EXPECT_EQ(st::f32_to_f16(1023.5f * u), 0x0400);  // subnormal rounds up into the smallest normal
  EXPECT_EQ(st::f32_to_f16(0.25f * u), 0x0000);
  EXPECT_EQ(st::f32_to_f16(-0.75f * u), 0x8001);
  // Normal range: 1 + 2^-11 is halfway between 1 and 1 + 2^-10.
  EXPECT_EQ(st::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);
  EXPECT_EQ(st::f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);
  EXPECT_EQ(st::f32_to_f16(from_bits(0x3F801001)), 0x3C01);  // just above the first tie
  // 2047/1024 rounds up across the exponent to 2.0.
  EXPECT_EQ(st::f32_to_f16(1.0f + 2047 * std::ldexp(1.0f, -11)), 0x4000);
}

TEST(SafetensorsConvert, F16InfNanOverflow) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(st::f32_to_f16(inf), 0x7C00);
  EXPECT_EQ(st::f32_to_f16(-inf), 0xFC00);
  EXPECT_EQ(st::f32_to_f16(65519.99f), 0x7BFF);
  EXPECT_EQ(st::f32_to_f16(65520.0f), 0x7C00);  // the tie goes to even = inf
  EXPECT_EQ(st::f32_to_f16(-1e10f), 0xFC00);
  EXPECT_EQ(st::f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(st::f32_to_f16(-std::numeric_limits<float>::denorm_min()), 0x8000);
  EXPECT_EQ(st::f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_TRUE(std::isinf(st::f16_to_f32(0x7C00)));
  EXPECT_TRUE(std::isinf(st::f16_to_f32(0xFC00)) && st::f16_to_f32(0xFC00) < 0);
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFF800001u, 0x7FFFFFFFu}) {
    uint16_t h = st::f32_to_f16(from_bits(nan));
    EXPECT_TRUE(std::isnan(st::f16_to_f32(h))) << std::hex << nan;
    EXPECT_EQ(h >> 15, nan >> 31);
  }
  EXPECT_TRUE(std::isnan(st::f16_to_f32(0x7C01)));
  EXPECT_TRUE(std::isnan(st::f16_to_f32(0xFE00)));
}

TEST(SafetensorsConvert, F16AllValuesRoundTrip) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    float f = st::f16_to_f32(static_cast<uint16_t>(h));
    uint16_t back = st::f32_to_f16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(st::f16_to_f32(back))) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << std::hex << h;
    }
  }
}

TEST(SafetensorsConvert, F16MatchesReferenceOnRandomFloats) {
  std::mt19937 rng(99);
  int checked = 0;
  for (int i = 0; i < 400000; ++i) {
    // Concentrate exponents in and around the f16 range.
    uint32_t b = (rng() & 0x807FFFFFu) | (static_cast<uint32_t>(98 + rng() % 46) << 23);
    float x = from_bits(b);
    float ax = std::fabs(x);
    if (ax >= 65504.0f) continue;  // the upper neighbour would be inf; covered above
    // Truncated f16 encoding of |x|, found by bisection over the monotone encodings.
    uint16_t lo = 0, hi = 0x7BFF;
    while (lo < hi) {
      uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
      if (st::f16_to_f32(mid) <= ax) lo = mid;
      else hi = static_cast<uint16_t>(mid - 1);
    }
    uint16_t want = rne_reference(ax, lo, st::f16_to_f32) | (x < 0 ? 0x8000 : 0);
    ASSERT_EQ(st::f32_to_f16(x), want) << std::hex << b;
#ifdef __FLT16_MAX__
    // The compiler's own conversion, where the target has _Float16.
    ASSERT_EQ(st::f32_to_f16(x), std::bit_cast<uint16_t>(static_cast<_Float16>(x))) << std::hex << b;
#endif
    ++checked;
  }
  EXPECT_GT(checked, 100000);
}

// ---------------------------------------------------------------- round trip

namespace {

template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

struct Expected {
  std::string name;
  st::DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<Expected> sample_tensors() {
  std::vector<Expected> t;
  t.push_back({"f32.matrix", st::DType::F32, {2, 3}, as_bytes(std::vector<float>{1, -2, 3.5f, 0, -0.0f, 1e-30f})});
  t.push_back({"f64.scalar", st::DType::F64, {}, as_bytes(std::vector<double>{3.141592653589793})});
  t.push_back({"i32.vec", st::DType::I32, {4}, as_bytes(std::vector<int32_t>{-1, 0, 7, 2147483647})});
  t.push_back({"empty.u8", st::DType::U8, {0}, {}});
  t.push_back({"i64.col", st::DType::I64, {3, 1}, as_bytes(std::vector<int64_t>{-5, 1 << 20, 42})});
  t.push_back({"empty.3d", st::DType::I8, {3, 0, 2}, {}});
  t.push_back({"bool", st::DType::BOOL, {3}, {1, 0, 1}});
  t.push_back({"f16", st::DType::F16, {2}, as_bytes(std::vector<uint16_t>{0x3C00, 0xC100})});
  t.push_back({"u16", st::DType::U16, {1, 1, 1}, as_bytes(std::vector<uint16_t>{65535})});
  t.push_back({"u32", st::DType::U32, {2}, as_bytes(std::vector<uint32_t>{1, 4000000000u})});
  t.push_back({"u64", st::DType::U64, {1}, as_bytes(std::vector<uint64_t>{~0ull})});
  t.push_back({"i16", st::DType::I16, {2}, as_bytes(std::vector<int16_t>{-32768, 5})});
  t.push_back({"unicodé ✓ name", st::DType::U8, {5}, {1, 2, 3, 4, 5}});
  return t;
}

}  // namespace

TEST(SafetensorsRoundTrip, ManyDtypesAndShapes) {
  const auto tensors = sample_tensors();
  st::Writer w;
  for (const auto& t : tensors) w.add(t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size());
  const std::string path = temp_path("roundtrip.safetensors");
  w.write(path);

  // What reached the disk is exactly serialize(), with the data section 8-aligned.
  std::vector<uint8_t> disk = intellect::read_file(path);
  EXPECT_EQ(disk, w.serialize());
  uint64_t n = 0;
  std::memcpy(&n, disk.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  EXPECT_EQ(disk[8], '{');

  st::File f = st::File::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.header_size(), n);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    const st::TensorInfo& info = f.get(t.name);
    EXPECT_EQ(info.name, t.name);
    EXPECT_EQ(info.dtype, t.dtype);
    EXPECT_EQ(info.shape, t.shape);
    auto b = f.bytes(info);
    EXPECT_EQ(std::vector<uint8_t>(b.begin(), b.end()), t.bytes);
    EXPECT_EQ(f.find(t.name), &info);
  }
  // Data-offset order, contiguous from 0.
  uint64_t pos = 0;
  for (const auto& t : f.tensors()) {
    EXPECT_EQ(t.begin, pos);
    pos = t.end;
  }
  EXPECT_EQ(pos, disk.size() - 8 - n);

  EXPECT_EQ(f.read_f32("f32.matrix"), (std::vector<float>{1, -2, 3.5f, 0, -0.0f, 1e-30f}));
  EXPECT_EQ(f.read_f32("f16"), (std::vector<float>{1.0f, -2.5f}));
  EXPECT_EQ(f.read_i32("i32.vec"), (std::vector<int32_t>{-1, 0, 7, 2147483647}));
  EXPECT_EQ(f.read_i32("i64.col"), (std::vector<int32_t>{-5, 1 << 20, 42}));
  EXPECT_TRUE(f.metadata().empty());

  // The same bytes through from_bytes (no mmap) give the same view.
  st::File g = st::File::from_bytes(disk, "copy");
  ASSERT_EQ(g.tensors().size(), f.tensors().size());
  for (size_t i = 0; i < g.tensors().size(); ++i) {
    EXPECT_EQ(g.tensors()[i].name, f.tensors()[i].name);
    EXPECT_EQ(g.tensors()[i].begin, f.tensors()[i].begin);
  }
  std::filesystem::remove(path);
}

TEST(SafetensorsRoundTrip, F32AndBf16Helpers) {
  std::vector<float> x = {1.0f, -0.0f, 3.14159f, 1e-3f, -65504.0f, from_bits(0x3F808000), from_bits(0x3F818000)};
  st::Writer w;
  w.add_f32("w", {7}, x.data());
  w.add_bf16_from_f32("w_bf16", {7, 1}, x.data());
  const std::string path = temp_path("helpers.safetensors");
  w.write(path);
  st::File f = st::File::open(path);
  EXPECT_EQ(f.get("w").dtype, st::DType::F32);
  EXPECT_EQ(f.read_f32("w"), x);
  EXPECT_EQ(f.get("w_bf16").dtype, st::DType::BF16);
  EXPECT_EQ(f.get("w_bf16").shape, (std::vector<int64_t>{7, 1}));
  std::vector<float> back = f.read_f32("w_bf16");
  ASSERT_EQ(back.size(), x.size());
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(back[i], st::bf16_to_f32(st::f32_to_bf16(x[i]))) << i;
  EXPECT_EQ(back[5], 1.0f);     // tie rounded to even
  EXPECT_EQ(back[6], st::bf16_to_f32(0x3F82));  // tie rounded to even (up)
  std::filesystem::remove(path);
}

TEST(SafetensorsRoundTrip, ZeroDimAndEmptyOnly) {
  st::Writer w;
  float s = 2.5f;
  w.add_f32("scalar", {}, &s);
  w.add("nothing", st::DType::F32, {0, 4}, nullptr, 0);
  st::File f = st::File::from_bytes(w.serialize(), "mem");
  EXPECT_EQ(f.get("scalar").shape.size(), 0u);
  EXPECT_EQ(f.get("scalar").numel(), 1);
  EXPECT_EQ(f.read_f32("scalar"), std::vector<float>{2.5f});
  EXPECT_EQ(f.get("nothing").numel(), 0);
  EXPECT_TRUE(f.read_f32("nothing").empty());
  EXPECT_EQ(f.bytes(f.get("nothing")).size(), 0u);
}

TEST(SafetensorsRoundTrip, NoTensorsAtAll) {
  st::Writer w;
  const std::string path = temp_path("empty_set.safetensors");
  w.write(path);
  st::File f = st::File::open(path);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_EQ(f.find("x"), nullptr);
  std::filesystem::remove(path);
  // The minimal valid file: header "{}" and no data.
  EXPECT_TRUE(st::File::from_bytes(build("{}", 0), "m").tensors().empty());
}

TEST(SafetensorsRoundTrip, ManyEmptyTensorsAtOneOffset) {
  // Zero-sized tensors share offsets; the order must not depend on JSON key order.
  auto bytes = build(R"({"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                     R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("a":{"dtype":"U8","shape":[0,9],"data_offsets":[4,4]},)"
                     R"("c":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
                     4);
  st::File f = st::File::from_bytes(bytes, "m");
  std::vector<std::string> names;
  for (const auto& t : f.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"c", "b", "a", "z"}));
}

TEST(SafetensorsRoundTrip, Metadata) {
  st::Writer w;
  w.set_metadata("format", "pt");
  w.set_metadata("step", "1200");
  w.set_metadata("note", "quotes \" and \\ and \n newline, ünïcode");
  w.set_metadata("step", "1300");  // later value wins
  float one = 1;
  w.add_f32("x", {1}, &one);
  st::File f = st::File::from_bytes(w.serialize(), "meta");
  EXPECT_EQ(f.metadata().size(), 3u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("step"), "1300");
  EXPECT_EQ(f.metadata().at("note"), "quotes \" and \\ and \n newline, ünïcode");
  EXPECT_EQ(f.find("__metadata__"), nullptr);
  EXPECT_EQ(f.tensors().size(), 1u);

  // A null __metadata__ means none, as in the reference implementation.
  EXPECT_TRUE(st::File::from_bytes(build(R"({"__metadata__":null})", 0), "m").metadata().empty());
}

TEST(SafetensorsRoundTrip, HeaderPaddingWithSpacesIsAccepted) {
  // Reference writers pad with trailing spaces; our own output must also parse
  // whatever its padding is.
  for (int pad = 0; pad < 9; ++pad) {
    std::string h = R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})" + std::string(pad, ' ');
    EXPECT_EQ(st::File::from_bytes(build(h, 2), "p").get("a").numel(), 2);
  }
  st::Writer w;
  for (int i = 0; i < 20; ++i) {
    std::vector<uint8_t> d(static_cast<size_t>(i), 7);
    w.add(std::string(static_cast<size_t>(i + 1), 'n'), st::DType::U8, {i}, d.data(), d.size());
    auto bytes = w.serialize();
    uint64_t n;
    std::memcpy(&n, bytes.data(), 8);
    ASSERT_EQ(n % 8, 0u);
    ASSERT_EQ(st::File::from_bytes(bytes, "w").tensors().size(), static_cast<size_t>(i + 1));
  }
}

TEST(SafetensorsRoundTrip, MoveKeepsTheViewValid) {
  st::Writer w;
  std::vector<float> x = {1, 2, 3};
  w.add_f32("x", {3}, x.data());
  const std::string path = temp_path("move.safetensors");
  w.write(path);
  st::File a = st::File::open(path);  // mmapped
  st::File b = std::move(a);
  EXPECT_EQ(b.read_f32("x"), x);
  st::File c = st::File::from_bytes(w.serialize(), "mem");
  c = std::move(b);  // releases c's buffer, takes b's mapping
  EXPECT_EQ(c.read_f32("x"), x);
  EXPECT_EQ(c.path(), path);
  std::filesystem::remove(path);
}

TEST(SafetensorsRoundTrip, AtomicWriteLeavesNoTempFile) {
  const std::string dir = temp_path("atomic_dir");
  std::filesystem::remove_all(dir);
  intellect::make_dirs(dir);
  st::Writer w;
  float v = 1;
  w.add_f32("v", {}, &v);
  w.write(dir + "/m.safetensors");
  w.write(dir + "/m.safetensors");  // overwrite in place
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"m.safetensors"});
  std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------- reader errors on valid files

TEST(SafetensorsRead, LookupAndConversionErrors) {
  st::Writer w;
  std::vector<int64_t> big = {1, int64_t{1} << 40};
  std::vector<int32_t> i32 = {1, 2};
  std::vector<uint8_t> u8 = {1};
  w.add("big", st::DType::I64, {2}, big.data(), 16);
  w.add("i32", st::DType::I32, {2}, i32.data(), 8);
  w.add("u8", st::DType::U8, {1}, u8.data(), 1);
  st::File f = st::File::from_bytes(w.serialize(), "model.safetensors");

  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_EQ(error_of([&] { f.get("missing"); }), "model.safetensors: no tensor 'missing'");
  EXPECT_NE(error_of([&] { f.read_i32("big"); }).find("does not fit in int32"), std::string::npos);
  EXPECT_NE(error_of([&] { f.read_f32("i32"); }).find("model.safetensors: tensor 'i32' is I32"), std::string::npos);
  EXPECT_NE(error_of([&] { f.read_i32("u8"); }).find("is U8"), std::string::npos);
  EXPECT_THROW(f.read_f32("missing"), Error);
}

TEST(SafetensorsRead, MissingAndEmptyFiles) {
  const std::string missing = temp_path("does_not_exist.safetensors");
  std::string msg = error_of([&] { st::File::open(missing); });
  EXPECT_NE(msg.find(missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("cannot open"), std::string::npos) << msg;

  const std::string empty = temp_path("empty.safetensors");
  intellect::write_file_atomic(empty, "", 0);
  msg = error_of([&] { st::File::open(empty); });
  EXPECT_NE(msg.find(empty + ": file is 0 bytes"), std::string::npos) << msg;
  std::filesystem::remove(empty);
}

// ---------------------------------------------------------------- writer errors

TEST(SafetensorsWriter, RefusesBadInput) {
  st::Writer w;
  float d[4] = {};
  EXPECT_NE(error_of([&] { w.add("x", st::DType::F32, {2, 2}, d, 12); }).find("needs 16 bytes but 12"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add("neg", st::DType::F32, {-1, 2}, d, 8); }).find("negative"), std::string::npos);
  EXPECT_THROW(w.add_f32("neg", {2, -2}, d), Error);
  EXPECT_THROW(w.add("", st::DType::F32, {1}, d, 4), Error);
  EXPECT_THROW(w.add("__metadata__", st::DType::F32, {1}, d, 4), Error);
  EXPECT_THROW(w.add("bad\xff", st::DType::U8, {1}, d, 1), Error);
  EXPECT_THROW(w.add("null", st::DType::F32, {1}, nullptr, 4), Error);
  EXPECT_THROW(w.add("huge", st::DType::F64, {int64_t{1} << 62, 4}, d, 0), Error);
  EXPECT_THROW(w.set_metadata("k", "\xc3"), Error);
  w.add("x", st::DType::F32, {2, 2}, d, 16);
  EXPECT_NE(error_of([&] { w.add("x", st::DType::F32, {1}, d, 4); }).find("'x' added twice"), std::string::npos);
  EXPECT_EQ(w.size(), 1u);  // failed adds leave nothing behind
}

// ---------------------------------------------------------------- validation, one rule per test

namespace {
const std::string kOneF32 = R"({"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}
}  // namespace

TEST(SafetensorsValidate, GoodBaselineOpens) {
  st::File f = st::File::from_bytes(build(kOneF32, 16), "ok");
  EXPECT_EQ(f.get("x").shape, (std::vector<int64_t>{2, 2}));
}

TEST(SafetensorsValidate, FileShorterThanEightBytes) {
  expect_refused({}, "file is 0 bytes, too small");
  expect_refused({1, 2, 3, 4, 5}, "file is 5 bytes, too small");
}

TEST(SafetensorsValidate, HeaderTooBig) {
  expect_refused(build(kOneF32, 16, 100'000'001), "header length 100000001 exceeds the limit");
  expect_refused(build(kOneF32, 16, ~0ull), "exceeds the limit");  // no overflow in 8 + N
  // Exactly at the limit is not refused for size, only for running past the file.
  expect_refused(build(kOneF32, 16, 100'000'000), "runs past the end of the file");
}

TEST(SafetensorsValidate, HeaderRunsPastEndOfFile) {
  auto bytes = build(kOneF32, 0);
  bytes.resize(8 + kOneF32.size() - 5);  // truncated inside the header
  expect_refused(bytes, "runs past the end of the file");
}

TEST(SafetensorsValidate, TruncatedData) {
  expect_refused(build(kOneF32, 15),
                 "tensors end at byte 16 of the data section but it holds 15 bytes");
  expect_refused(build(kOneF32, 0), "but it holds 0 bytes");
}

TEST(SafetensorsValidate, TrailingBytesAfterData) {
  expect_refused(build(kOneF32, 17), "trailing bytes");
}

TEST(SafetensorsValidate, HeaderNotUtf8) {
  std::string h = R"({"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"k":"v)";
  expect_refused(build(h + "\xff\"}}", 16), "not valid UTF-8");
  expect_refused(build(h + "\xed\xa0\x80\"}}", 16), "not valid UTF-8");  // encoded surrogate
  expect_refused(build(h + "\xc0\xaf\"}}", 16), "not valid UTF-8");      // overlong '/'
  // Well-formed multi-byte text is fine.
  EXPECT_NO_THROW(st::File::from_bytes(build(h + "\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80\"}}", 16), "ok"));
}

TEST(SafetensorsValidate, HeaderMustStartWithBrace) {
  expect_refused(build(" " + kOneF32, 16), "does not start with '{'");
  expect_refused(build("", 0), "does not start with '{'");
  expect_refused(build("\xef\xbb\xbf" + kOneF32, 16), "does not start with '{'");  // BOM
}

TEST(SafetensorsValidate, HeaderNotAnObject) {
  expect_refused(build("[1,2]", 0), "does not start with '{'");
  expect_refused(build("\"str\"", 0), "does not start with '{'");
  expect_refused(build("null", 0), "does not start with '{'");
  // Starts with '{' but is not one JSON object.
  expect_refused(build("{} []", 0), "not valid JSON");
  expect_refused(build("{", 0), "not valid JSON");
  expect_refused(build(R"({"x":1,})", 0), "not valid JSON");
  expect_refused(build("{/*c*/}", 0), "not valid JSON");
}

TEST(SafetensorsValidate, Gap) {
  std::string h = "{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("b", "F32", "[1]", "[8,12]") + "}";
  expect_refused(build(h, 12), "tensor 'b' starts at 8 but the previous tensor 'a' ends at 4 (gap");
  std::string h2 = "{" + entry("a", "F32", "[1]", "[4,8]") + "}";
  expect_refused(build(h2, 8), "tensor 'a' starts at 4 but the data section starts at 0 (gap)");
}

TEST(SafetensorsValidate, Overlap) {
  std::string h = "{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[2]", "[4,12]") + "}";
  expect_refused(build(h, 12), "tensor 'b' starts at 4 but the previous tensor 'a' ends at 8 (overlap");
  // Two tensors on the very same bytes.
  std::string h2 = "{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("b", "I32", "[1]", "[0,4]") + "}";
  expect_refused(build(h2, 4), "overlap");
}

TEST(SafetensorsValidate, WrongByteCount) {
  std::string h = R"({"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})";
  std::string msg = expect_refused(build(h, 12), "");
  EXPECT_EQ(msg, "bad.safetensors: tensor 'x': data_offsets [0, 12] span 12 bytes but F32 [2,2] needs 16");
  expect_refused(build("{" + entry("s", "F64", "[]", "[0,4]") + "}", 4), "span 4 bytes but F64 [] needs 8");
  expect_refused(build("{" + entry("e", "F32", "[0]", "[0,4]") + "}", 4), "needs 0");
}

TEST(SafetensorsValidate, ByteCountOverflow) {
  expect_refused(build("{" + entry("x", "F32", "[4294967296,4294967296]", "[0,0]") + "}", 0),
                 "overflows a 64-bit byte count");
  expect_refused(build("{" + entry("x", "U64", "[4611686018427387904]", "[0,0]") + "}", 0),
                 "overflows a 64-bit byte count");
  // Checked in shape order, as the reference does: the product overflows before the 0.
  expect_refused(build("{" + entry("x", "U8", "[1099511627776,1099511627776,0]", "[0,0]") + "}", 0),
                 "overflows");
  expect_refused(build("{" + entry("x", "U8", "[18446744073709551616]", "[0,0]") + "}", 0),
                 "not a non-negative integer");  // past u64: JSON float
}

TEST(SafetensorsValidate, UnknownDtype) {
  expect_refused(build("{" + entry("x", "F8", "[1]", "[0,1]") + "}", 1), "tensor 'x': unknown dtype 'F8'");
  expect_refused(build("{" + entry("x", "f32", "[1]", "[0,4]") + "}", 4), "unknown dtype 'f32'");
  expect_refused(build(R"({"x":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4), "dtype must be a string");
}

TEST(SafetensorsValidate, NegativeOrNonIntegerShape) {
  expect_refused(build("{" + entry("x", "F32", "[-1,2]", "[0,0]") + "}", 0),
                 "tensor 'x': shape [-1,2] has -1, not a non-negative integer");
  expect_refused(build("{" + entry("x", "F32", "[2.0]", "[0,8]") + "}", 8), "not a non-negative integer");
  expect_refused(build("{" + entry("x", "F32", "[\"2\"]", "[0,8]") + "}", 8), "not a non-negative integer");
  expect_refused(build("{" + entry("x", "F32", "[[2]]", "[0,8]") + "}", 8), "not a non-negative integer");
  expect_refused(build("{" + entry("x", "F32", "2", "[0,8]") + "}", 8), "shape must be an array");
  expect_refused(build("{" + entry("x", "F32", "null", "[0,8]") + "}", 8), "shape must be an array");
}

TEST(SafetensorsValidate, BadDataOffsets) {
  expect_refused(build("{" + entry("x", "F32", "[1]", "[8,4]") + "}", 8), "data_offsets [8, 4] have begin > end");
  expect_refused(build("{" + entry("x", "F32", "[1]", "[4]") + "}", 4), "data_offsets must be [begin, end]");
  expect_refused(build("{" + entry("x", "F32", "[1]", "[0,4,8]") + "}", 8), "data_offsets must be [begin, end]");
  expect_refused(build("{" + entry("x", "F32", "[1]", "[-4,0]") + "}", 4), "must be non-negative integers");
  expect_refused(build("{" + entry("x", "F32", "[1]", "[0,4.0]") + "}", 4), "must be non-negative integers");
  expect_refused(build("{" + entry("x", "F32", "[1]", "{}") + "}", 4), "data_offsets must be [begin, end]");
}

TEST(SafetensorsValidate, EntryMustHaveExactlyTheThreeKeys) {
  expect_refused(build(R"({"x":{"dtype":"F32","shape":[1]}})", 4), "tensor 'x': missing 'data_offsets'");
  expect_refused(build(R"({"x":{"shape":[1],"data_offsets":[0,4]}})", 4), "missing 'dtype'");
  expect_refused(build(R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}})", 4),
                 "unexpected key 'extra'");
  expect_refused(build(R"({"x":[1,2]})", 0), "tensor 'x': expected an object");
  expect_refused(build(R"({"x":"F32"})", 0), "expected an object");
}

TEST(SafetensorsValidate, DuplicateNames) {
  std::string h = "{" + entry("a", "F32", "[1]", "[0,4]") + "," + entry("a", "F32", "[1]", "[4,8]") + "}";
  expect_refused(build(h, 8), "duplicate tensor name 'a'");
  // Duplicates inside an entry or in the metadata are just as ambiguous.
  expect_refused(build(R"({"x":{"dtype":"F32","dtype":"I32","shape":[1],"data_offsets":[0,4]}})", 4),
                 "duplicate key 'dtype'");
  expect_refused(build(R"({"__metadata__":{"k":"1","k":"2"}})", 0), "duplicate key 'k'");
  expect_refused(build(R"({"__metadata__":{},"__metadata__":{}})", 0), "duplicate tensor name '__metadata__'");
  // Equal keys in different objects are not duplicates.
  std::string ok = "{" + entry("dtype", "F32", "[1]", "[0,4]") + R"(,"__metadata__":{"dtype":"x","shape":"y"}})";
  EXPECT_EQ(st::File::from_bytes(build(ok, 4), "ok").get("dtype").numel(), 1);
}

TEST(SafetensorsValidate, BadMetadata) {
  expect_refused(build(R"({"__metadata__":["a"]})", 0), "__metadata__ must be an object");
  expect_refused(build(R"({"__metadata__":"pt"})", 0), "__metadata__ must be an object");
  expect_refused(build(R"({"__metadata__":{"step":5}})", 0), "__metadata__ key 'step' must have a string value");
  expect_refused(build(R"({"__metadata__":{"a":{"b":"c"}}})", 0), "key 'a' must have a string value");
  expect_refused(build(R"({"__metadata__":{"a":null}})", 0), "must have a string value");
}

TEST(SafetensorsValidate, DeepNestingIsRefusedNotACrash) {
  std::string deep = R"({"__metadata__":{"a":)" + std::string(100000, '[') + std::string(100000, ']') + "}}";
  expect_refused(build(deep, 0), "nests deeper than");
}

TEST(SafetensorsValidate, ErrorsNameTheFileOnDisk) {
  const std::string path = temp_path("bad_on_disk.safetensors");
  auto bytes = build(kOneF32, 12);
  intellect::write_file_atomic(path, bytes.data(), bytes.size());
  std::string msg = error_of([&] { st::File::open(path); });
  EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
  std::filesystem::remove(path);
}

// ---------------------------------------------------------------- fuzz

namespace {

// Every property a caller relies on after a successful open.
void check_consistent(const st::File& f, size_t file_size) {
  uint64_t pos = 0;
  for (const auto& t : f.tensors()) {
    ASSERT_EQ(t.begin, pos) << t.name;
    ASSERT_LE(t.begin, t.end);
    for (int64_t d : t.shape) ASSERT_GE(d, 0);
    ASSERT_EQ(t.end - t.begin, static_cast<uint64_t>(t.numel()) * st::dtype_size(t.dtype)) << t.name;
    ASSERT_EQ(f.find(t.name), &t);
    auto b = f.bytes(t);
    ASSERT_EQ(b.size(), t.end - t.begin);
    volatile uint8_t sink = 0;
    for (uint8_t v : b) sink = sink ^ v;  // every byte must be readable (ASan checks)
    if (t.dtype == st::DType::F32 || t.dtype == st::DType::BF16 || t.dtype == st::DType::F16) {
      ASSERT_EQ(f.read_f32(t.name).size(), static_cast<size_t>(t.numel()));
    }
    if (t.dtype == st::DType::I32 || t.dtype == st::DType::I64) {
      try {
        ASSERT_EQ(f.read_i32(t.name).size(), static_cast<size_t>(t.numel()));
      } catch (const Error&) {  // I64 values out of int32 range
        ASSERT_EQ(t.dtype, st::DType::I64);
      }
    }
    pos = t.end;
  }
  ASSERT_EQ(pos, file_size - 8 - f.header_size());
  size_t meta_chars = 0;
  for (const auto& [k, v] : f.metadata()) meta_chars += k.size() + v.size();
  (void)meta_chars;
}

}  // namespace

TEST(SafetensorsFuzz, MutatedFilesOpenConsistentlyOrThrowError) {
  st::Writer w;
  std::vector<float> f32 = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> i64 = {1, -2, int64_t{1} << 40};
  std::vector<int32_t> i32 = {7, 8};
  std::vector<uint8_t> u8 = {1, 2, 3};
  w.add_f32("a", {2, 3}, f32.data());
  w.add_bf16_from_f32("b", {3, 2}, f32.data());
  w.add("c", st::DType::I64, {3}, i64.data(), 24);
  w.add("d", st::DType::I32, {1, 2}, i32.data(), 8);
  w.add("e", st::DType::U8, {0}, nullptr, 0);
  w.add("f", st::DType::U8, {3}, u8.data(), 3);
  std::vector<uint16_t> h16 = {0x3C00, 0x7C00};
  w.add("g", st::DType::F16, {2}, h16.data(), 4);
  w.set_metadata("format", "pt");
  const std::vector<uint8_t> valid = w.serialize();
  ASSERT_NO_THROW(st::File::from_bytes(valid, "valid"));

  const char interesting[] = "{}[]\",:0123456789-. eE\\nt";
  std::mt19937_64 rng(0x5AFE7E45);
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % n); };
  int opened = 0, refused = 0;
  constexpr int kIters = 20000;
  for (int iter = 0; iter < kIters; ++iter) {
    std::vector<uint8_t> b = valid;
    const int n_mut = 1 + static_cast<int>(pick(3));
    for (int m = 0; m < n_mut && !b.empty(); ++m) {
      switch (pick(9)) {
        case 0:  // flip a bit anywhere
          b[pick(b.size())] ^= static_cast<uint8_t>(1u << pick(8));
          break;
        case 1:  // overwrite a header byte with JSON syntax
          if (b.size() > 8)
            b[8 + pick(std::min(b.size(), valid.size()) - 8)] =
                static_cast<uint8_t>(interesting[pick(sizeof(interesting) - 1)]);
          break;
        case 2:  // truncate
          b.resize(pick(b.size() + 1));
          break;
        case 3:  // random byte anywhere
          b[pick(b.size())] = static_cast<uint8_t>(rng());
          break;
        case 4: {  // insert bytes
          size_t at = pick(b.size() + 1);
          b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), 1 + pick(8), static_cast<uint8_t>(interesting[pick(sizeof(interesting) - 1)]));
          break;
        }
        case 5: {  // delete a range
          size_t at = pick(b.size());
          size_t len = std::min(b.size() - at, 1 + pick(8));
          b.erase(b.begin() + static_cast<std::ptrdiff_t>(at), b.begin() + static_cast<std::ptrdiff_t>(at + len));
          break;
        }
        case 6:  // nudge the header length
          if (b.size() >= 8) {
            uint64_t n;
            std::memcpy(&n, b.data(), 8);
            n += static_cast<uint64_t>(static_cast<int64_t>(pick(33)) - 16);
            std::memcpy(b.data(), &n, 8);
          }
          break;
        case 7:  // random header length
          if (b.size() >= 8) {
            uint64_t n = rng() >> pick(64);
            std::memcpy(b.data(), &n, 8);
          }
          break;
        case 8: {  // change a digit in the header (offsets, shapes)
          for (int tries = 0; tries < 50 && b.size() > 8; ++tries) {
            size_t at = 8 + pick(std::min(b.size(), valid.size()) - 8);
            if (b[at] >= '0' && b[at] <= '9') {
              b[at] = static_cast<uint8_t>('0' + pick(10));
              break;
            }
          }
          break;
        }
      }
    }
    const size_t size = b.size();
    try {
      st::File f = st::File::from_bytes(std::move(b), "fuzz.safetensors");
      check_consistent(f, size);
      if (::testing::Test::HasFatalFailure()) {
        ADD_FAILURE() << "inconsistent file accepted at iteration " << iter;
        return;
      }
      ++opened;
    } catch (const Error& e) {
      ASSERT_EQ(std::string(e.what()).rfind("fuzz.safetensors: ", 0), 0u) << "iteration " << iter << ": " << e.what();
      ++refused;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iter << ": non-intellect exception: " << e.what();
    }
  }
  // Both outcomes must be exercised for the test to mean anything.
  EXPECT_GT(opened, 100);
  EXPECT_GT(refused, 1000);
  std::printf("[fuzz] %d mutated files: %d opened, %d refused\n", kIters, opened, refused);
}

// ---------------------------------------------------------------- real fixture

TEST(SafetensorsFixture, TinyLlamaEmbedding) {
  const std::string path = INTELLECT_SHARED_DATA "/fixtures/tiny-llama-hf/model.safetensors";
  if (!intellect::path_exists(path)) GTEST_SKIP() << "fixture missing: " << path;
  st::File f = st::File::open(path);
  const st::TensorInfo& e = f.get("model.embed_tokens.weight");
  EXPECT_EQ(e.dtype, st::DType::F32);
  EXPECT_EQ(e.shape, (std::vector<int64_t>{512, 64}));
  std::vector<float> w = f.read_f32("model.embed_tokens.weight");
  ASSERT_EQ(w.size(), 512u * 64u);
  double sumsq = 0;
  for (float v : w) {
    ASSERT_TRUE(std::isfinite(v));
    sumsq += double(v) * v;
  }
  EXPECT_GT(sumsq, 0.0);
  EXPECT_EQ(f.metadata().at("format"), "pt");

  // Rewriting every tensor through Writer reproduces the same data.
  st::Writer rw;
  for (const auto& t : f.tensors()) {
    auto b = f.bytes(t);
    rw.add(t.name, t.dtype, t.shape, b.data(), b.size());
  }
  for (const auto& [k, v] : f.metadata()) rw.set_metadata(k, v);
  st::File g = st::File::from_bytes(rw.serialize(), "rewritten");
  ASSERT_EQ(g.tensors().size(), f.tensors().size());
  for (const auto& t : f.tensors()) {
    auto a = f.bytes(t);
    auto b = g.bytes(g.get(t.name));
    ASSERT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.name;
  }
}
