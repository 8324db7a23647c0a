#include "train/join_state.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace intellect {

namespace {

// Calls copy(array, offset, length) for every block of the four arrays of
// `per_array` bytes, on up to `threads` threads: the copies touch fresh
// pages (a GB takes ~0.3 s on one thread, page faults included).
template <typename Copy>
void copy_blocks(Copy copy, size_t per_array, size_t threads) {
  constexpr size_t kBlock = size_t{8} << 20;  // bytes
  const size_t blocks = (per_array + kBlock - 1) / kBlock;
  auto run = [&](size_t t, size_t nt) {
    for (size_t i = t; i < 4 * blocks; i += nt) {
      const size_t at = (i % blocks) * kBlock;
      copy(i / blocks, at, std::min(kBlock, per_array - at));
    }
  };
  const size_t nt = std::clamp<size_t>(threads, 1, std::max<size_t>(1, 4 * blocks));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < nt; ++t) pool.emplace_back(run, t, nt);
  run(0, nt);
  for (std::thread& t : pool) t.join();
}

}  // namespace

namespace {
constexpr char kTag[8] = {'I', 'J', 'S', 'T', 'A', 'T', 'E', '2'};
constexpr uint64_t kMaxHeader = 4096;
}  // namespace

ByteBuffer encode_join_state(const JoinStateView& s, size_t threads) {
  const size_t n = s.outer.size();
  if (s.momentum.size() != n || s.exp_avg.size() != n || s.exp_avg_sq.size() != n)
    fail("join state: the four arrays must have the same length");
  const std::string header = nlohmann::json{{"format", 2}, {"outer_step", s.outer_step}, {"step", s.step},
                                            {"adam_step", s.adam_step}, {"n", n}}.dump();
  const size_t per_array = n * sizeof(float);
  const size_t body = 4 * per_array;
  // Not zeroed: every byte is written below, the arrays' on all the threads.
  ByteBuffer out;
  out.reserve(body + header.size() + 8 + sizeof kTag);
  out.resize(out.capacity());
  const std::span<const float> arrays[4] = {s.outer, s.momentum, s.exp_avg, s.exp_avg_sq};
  copy_blocks(
      [&](size_t a, size_t at, size_t len_b) {
        std::memcpy(out.data() + a * per_array + at, reinterpret_cast<const uint8_t*>(arrays[a].data()) + at, len_b);
      },
      per_array, threads);
  const uint64_t len = header.size();
  std::memcpy(out.data() + body, header.data(), header.size());
  std::memcpy(out.data() + body + header.size(), &len, 8);
  std::memcpy(out.data() + body + header.size() + 8, kTag, sizeof kTag);
  return out;
}

ByteBuffer encode_join_state(const JoinState& s) {
  return encode_join_state(JoinStateView{s.outer_step, s.step, s.adam_step, s.outer, s.momentum, s.exp_avg,
                                         s.exp_avg_sq});
}

JoinState decode_join_state(std::span<const uint8_t> bytes, size_t expected_n, size_t threads) {
  const size_t trailer = 8 + sizeof kTag;
  if (bytes.size() < trailer || std::memcmp(bytes.data() + bytes.size() - sizeof kTag, kTag, sizeof kTag) != 0)
    fail("join state: ", bytes.size(), " bytes without the format-2 tag at the end (a donor running another "
         "version of intellect? every node of a run must run the same build)");
  uint64_t len = 0;
  std::memcpy(&len, bytes.data() + bytes.size() - trailer, 8);
  if (len > kMaxHeader || len + trailer > bytes.size()) fail("join state: header length ", len, " does not fit");
  const size_t header_at = bytes.size() - trailer - len;
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(std::string(reinterpret_cast<const char*>(bytes.data() + header_at), len));
  } catch (const nlohmann::json::exception& e) {
    fail("join state: the header is not JSON: ", e.what());
  }
  JoinState s;
  size_t n = 0;
  try {
    if (h.at("format").get<int>() != 2) fail("join state: format ", h.at("format").dump(), " is not 2");
    s.outer_step = h.at("outer_step").get<int64_t>();
    s.step = h.at("step").get<int64_t>();
    s.adam_step = h.at("adam_step").get<int64_t>();
    n = h.at("n").get<size_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("join state: header field missing or mistyped: ", e.what());
  }
  if (n != expected_n)
    fail("join state: the donor's model has ", n, " parameters, this one ", expected_n,
         " (every node of a run must use the same model config)");
  if (s.outer_step < 0 || s.step < 0 || s.adam_step < 0) fail("join state: negative counters");
  if (header_at != 4 * n * sizeof(float))
    fail("join state: ", header_at, " bytes of arrays, expected ", 4 * n * sizeof(float));
  const uint8_t* body = bytes.data();
  std::vector<float>* arrays[4] = {&s.outer, &s.momentum, &s.exp_avg, &s.exp_avg_sq};
  if (threads == 0) threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 16);
  // A vector cannot skip zeroing what it sizes: the four arrays are sized
  // side by side, then filled on all the threads.
  {
    std::vector<std::thread> sizing;
    for (size_t a = 1; a < 4 && threads > 1; ++a) sizing.emplace_back([&, a] { arrays[a]->resize(n); });
    for (size_t a = sizing.size() + 1; a < 4; ++a) arrays[a]->resize(n);
    arrays[0]->resize(n);
    for (std::thread& t : sizing) t.join();
  }
  const size_t per_array = n * sizeof(float);
  copy_blocks(
      [&](size_t a, size_t at, size_t len_b) {
        std::memcpy(reinterpret_cast<uint8_t*>(arrays[a]->data()) + at, body + a * per_array + at, len_b);
      },
      per_array, threads);
  return s;
}

}  // namespace intellect
