#include "dist/bytes.h"

#include <cstring>

#include "util/error.h"

namespace intellect {

void expect_header_field(const std::string& what, const char* field, uint64_t got, uint64_t want, const char* hint) {
  if (got != want) fail(what, ": ", field, " is ", got, ", expected ", want, " (", hint, ")");
}


// Explicit byte order (not memcpy of the host value) so the wire format does
// not depend on the machine.
template <class T>
static void put_le(std::vector<uint8_t>& buf, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) buf.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

template <class T>
static T get_le(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(p[i]) << (8 * i);
  return v;
}

void ByteWriter::u16(uint16_t v) { put_le(buf_, v); }
void ByteWriter::u32(uint32_t v) { put_le(buf_, v); }
void ByteWriter::u64(uint64_t v) { put_le(buf_, v); }

void ByteWriter::f32(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  put_le(buf_, bits);
}

void ByteWriter::bytes(const void* data, size_t n) {
  auto* p = static_cast<const uint8_t*>(data);
  buf_.insert(buf_.end(), p, p + n);
}

void ByteWriter::str(std::string_view s) {
  if (s.size() > UINT32_MAX) fail("string of ", s.size(), " bytes is too long for a message field");
  u32(static_cast<uint32_t>(s.size()));
  bytes(s.data(), s.size());
}

const uint8_t* ByteReader::take(const char* field, size_t n) {
  // Compare against what is left rather than computing off_ + n, which could wrap.
  if (n > n_ - off_)
    fail("malformed ", what_, ": field '", field, "' at byte ", off_, " needs ", n,
         " bytes but only ", n_ - off_, " remain (the message is ", n_,
         " bytes); the peer sent a truncated or mismatched message");
  const uint8_t* p = p_ + off_;
  off_ += n;
  return p;
}

uint8_t ByteReader::u8(const char* field) { return *take(field, 1); }
uint16_t ByteReader::u16(const char* field) { return get_le<uint16_t>(take(field, 2)); }
uint32_t ByteReader::u32(const char* field) { return get_le<uint32_t>(take(field, 4)); }
uint64_t ByteReader::u64(const char* field) { return get_le<uint64_t>(take(field, 8)); }

float ByteReader::f32(const char* field) {
  uint32_t bits = get_le<uint32_t>(take(field, 4));
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

void ByteReader::bytes(const char* field, void* out, size_t n) {
  const uint8_t* p = take(field, n);
  if (n) std::memcpy(out, p, n);
}

const uint8_t* ByteReader::view(const char* field, size_t n) { return take(field, n); }

std::string ByteReader::str(const char* field, size_t max_len) {
  size_t at = off_;
  uint32_t len = u32(field);
  if (len > max_len)
    fail("malformed ", what_, ": string '", field, "' at byte ", at, " claims ", len,
         " bytes, more than the limit of ", max_len);
  const uint8_t* p = take(field, len);
  return std::string(reinterpret_cast<const char*>(p), len);
}

void ByteReader::expect_end() const {
  if (off_ != n_)
    fail("malformed ", what_, ": ", n_ - off_, " unexpected trailing bytes after byte ", off_,
         " of ", n_, "; the peer may run a different protocol version");
}

}  // namespace intellect
