// The mesh's first layer: frames, the handshake, and the libuv transport on
// loopback. Every wait is bounded; the suite runs in a few seconds.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "dist/auth.h"
#include "dist/bytes.h"
#include "dist/frame.h"
#include "dist/transport.h"
#include "util/error.h"

using namespace intellect;
using namespace std::chrono_literals;

namespace {

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

RunSecret secret_a() { return RunSecret(std::vector<uint8_t>(32, 0xa5)); }
RunSecret secret_b() { return RunSecret(std::vector<uint8_t>(40, 0x5a)); }

// Decodes a whole stream, fed in pieces of the sizes `split` returns.
template <class Split>
std::vector<Frame> decode_all(const std::vector<uint8_t>& stream, Split split,
                              FrameDecoder::Phase phase = FrameDecoder::Phase::established) {
  FrameDecoder dec(phase);
  std::vector<Frame> out;
  size_t off = 0;
  while (off < stream.size()) {
    size_t piece = std::min(split(), stream.size() - off);
    size_t at = 0;
    while (at < piece) {
      size_t k = dec.feed(stream.data() + off + at, piece - at);
      EXPECT_FALSE(dec.failed()) << dec.error_message();
      at += k;
      if (dec.ready()) out.push_back(dec.take());
    }
    off += piece;
  }
  EXPECT_FALSE(dec.mid_frame());
  return out;
}

std::vector<Frame> sample_frames() {
  return {{FrameType::control, {}},
          {FrameType::control, pattern(1, 1)},
          {FrameType::data, pattern(100000, 2)},
          {FrameType::control, pattern(64 << 10, 3)},
          {FrameType::data, pattern(13, 4)}};
}

std::vector<uint8_t> concat(const std::vector<Frame>& frames) {
  std::vector<uint8_t> s;
  for (const auto& f : frames) {
    auto e = encode_frame(f);
    s.insert(s.end(), e.begin(), e.end());
  }
  return s;
}

void expect_same(const std::vector<Frame>& a, const std::vector<Frame>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].type, b[i].type) << i;
    EXPECT_EQ(a[i].payload, b[i].payload) << i;
  }
}

std::vector<uint8_t> header(uint32_t magic, uint16_t version, uint16_t type, uint32_t len) {
  ByteWriter w;
  w.u32(magic);
  w.u16(version);
  w.u16(type);
  w.u32(len);
  return w.take();
}

DecodeError decode_error_of(const std::vector<uint8_t>& bytes, FrameDecoder::Phase phase) {
  FrameDecoder dec(phase);
  size_t k = dec.feed(bytes.data(), bytes.size());
  EXPECT_LE(k, kFrameHeaderSize);  // nothing past the bad header is consumed
  if (dec.failed()) {
    EXPECT_FALSE(dec.error_message().empty());
    EXPECT_EQ(dec.feed(bytes.data(), bytes.size()), 0u);  // a failed stream stays failed
  }
  return dec.error();
}

}  // namespace

// --- frames ---------------------------------------------------------------

TEST(DistFrame, RoundTripWhole) {
  auto frames = sample_frames();
  auto stream = concat(frames);
  expect_same(decode_all(stream, [] { return SIZE_MAX; }), frames);
}

TEST(DistFrame, ByteByByte) {
  auto frames = sample_frames();
  frames.resize(3);
  frames[2].payload.resize(3000);
  expect_same(decode_all(concat(frames), [] { return size_t{1}; }), frames);
}

TEST(DistFrame, RandomSplits) {
  auto frames = sample_frames();
  auto stream = concat(frames);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<size_t> d(1, 20000);
    expect_same(decode_all(stream, [&] { return d(rng); }), frames);
  }
}

TEST(DistFrame, HeaderLayoutIsLittleEndian) {
  auto h = encode_frame_header(FrameType::data, 0x01020304);
  const uint8_t want[] = {'I', 'N', 'T', 'L', 1, 0, 17, 0, 4, 3, 2, 1};
  EXPECT_EQ(std::memcmp(h.data(), want, 12), 0);
}

TEST(DistFrame, EveryDecoderError) {
  using P = FrameDecoder::Phase;
  EXPECT_EQ(decode_error_of(header(0xdeadbeef, 1, 16, 0), P::established), DecodeError::bad_magic);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 2, 16, 0), P::established),
            DecodeError::unsupported_version);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 999, 0), P::established), DecodeError::unknown_type);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 16, 0), P::handshake), DecodeError::type_not_allowed);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 1, 32), P::established),
            DecodeError::type_not_allowed);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 16, (64 << 10) + 1), P::established),
            DecodeError::oversize);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 17, 0xffffffffu), P::established), DecodeError::oversize);
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 1, 257), P::handshake), DecodeError::oversize);
  // At the limit is fine.
  EXPECT_EQ(decode_error_of(header(kFrameMagic, 1, 17, 64u << 20), P::established), DecodeError::none);
}

TEST(DistFrame, ErrorDetectedAfterSplitHeader) {
  auto h = header(kFrameMagic, 7, 16, 0);
  FrameDecoder dec;
  EXPECT_EQ(dec.feed(h.data(), 5), 5u);
  EXPECT_TRUE(dec.mid_frame());
  EXPECT_FALSE(dec.failed());
  dec.feed(h.data() + 5, 7);
  EXPECT_EQ(dec.error(), DecodeError::unsupported_version);
  EXPECT_NE(dec.error_message().find("version 7"), std::string::npos) << dec.error_message();
}

TEST(DistFrame, EncoderRefusesOversizeAndUnknown) {
  EXPECT_THROW(encode_frame_header(FrameType::control, (64 << 10) + 1), Error);
  EXPECT_THROW(encode_frame_header(FrameType::auth_challenge, 257), Error);
  EXPECT_THROW(encode_frame_header(static_cast<FrameType>(999), 0), Error);
}

TEST(DistFrame, StopsAtFrameBoundary) {
  // Feeding two frames at once yields the first and leaves the second's bytes
  // to the caller, so it can switch phase in between.
  auto stream = concat({{FrameType::auth_confirm, pattern(32, 9)}, {FrameType::control, pattern(5, 8)}});
  FrameDecoder dec(FrameDecoder::Phase::handshake);
  size_t k = dec.feed(stream.data(), stream.size());
  EXPECT_EQ(k, kFrameHeaderSize + 32);
  ASSERT_TRUE(dec.ready());
  EXPECT_EQ(dec.take().type, FrameType::auth_confirm);
  dec.set_phase(FrameDecoder::Phase::established);
  EXPECT_EQ(dec.feed(stream.data() + k, stream.size() - k), stream.size() - k);
  ASSERT_TRUE(dec.ready());
  EXPECT_EQ(dec.take().payload, pattern(5, 8));
}

// --- byte reader / writer ----------------------------------------------------

TEST(DistBytes, RoundTrip) {
  ByteWriter w;
  w.u8(7);
  w.u16(0xbeef);
  w.u32(0xdeadbeef);
  w.u64(0x0123456789abcdefull);
  w.f32(-1.5f);
  w.str("node-3");
  w.bytes("xyz", 3);
  auto buf = w.take();
  ByteReader r(buf, "test message");
  EXPECT_EQ(r.u8("a"), 7);
  EXPECT_EQ(r.u16("b"), 0xbeef);
  EXPECT_EQ(r.u32("c"), 0xdeadbeefu);
  EXPECT_EQ(r.u64("d"), 0x0123456789abcdefull);
  EXPECT_EQ(r.f32("e"), -1.5f);
  EXPECT_EQ(r.str("f", 100), "node-3");
  char out[3];
  r.bytes("g", out, 3);
  EXPECT_EQ(std::string(out, 3), "xyz");
  EXPECT_NO_THROW(r.expect_end());
}

TEST(DistBytes, BoundsChecked) {
  ByteWriter w;
  w.u16(1);
  auto buf = w.take();
  {
    ByteReader r(buf, "hello message");
    try {
      r.u32("world_size");
      FAIL() << "read past the end";
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("world_size"), std::string::npos) << m;
      EXPECT_NE(m.find("hello message"), std::string::npos) << m;
    }
    EXPECT_EQ(r.offset(), 0u);  // a failed read consumes nothing
  }
  {
    ByteReader r(buf);
    r.u8("x");
    EXPECT_THROW(r.expect_end(), Error);
    EXPECT_THROW(r.u64("y"), Error);
    EXPECT_THROW(r.view("z", SIZE_MAX), Error);  // no wrap-around on huge lengths
  }
  {
    ByteWriter s;
    s.u32(1000);  // declares 1000 bytes, has none
    auto b = s.take();
    ByteReader r(b);
    EXPECT_THROW(r.str("name", 100), Error);  // over max_len
    ByteReader r2(b);
    EXPECT_THROW(r2.str("name", 5000), Error);  // truncated
  }
}

// --- authentication ----------------------------------------------------------

namespace {

struct HandshakeRun {
  bool initiator_ok = false, acceptor_ok = false;
  bool confirm_sent = false;
  std::string initiator_failure, acceptor_failure;
};

HandshakeRun run_handshake(const RunSecret& init_secret, const RunSecret& acc_secret) {
  Handshake acc(AuthRole::acceptor, acc_secret), ini(AuthRole::initiator, init_secret);
  HandshakeRun r;
  EXPECT_FALSE(ini.start().has_value());
  auto challenge = acc.start();
  EXPECT_TRUE(challenge.has_value());
  auto response = ini.on_frame(*challenge);
  EXPECT_TRUE(response.has_value());
  auto confirm = acc.on_frame(*response);
  r.confirm_sent = confirm.has_value();
  if (confirm) ini.on_frame(*confirm);
  r.initiator_ok = ini.done();
  r.acceptor_ok = acc.done();
  r.initiator_failure = ini.failure();
  r.acceptor_failure = acc.failure();
  return r;
}

}  // namespace

TEST(DistAuth, Success) {
  auto r = run_handshake(secret_a(), secret_a());
  EXPECT_TRUE(r.initiator_ok);
  EXPECT_TRUE(r.acceptor_ok);
}

TEST(DistAuth, WrongSecretInitiatorLearnsNothing) {
  auto r = run_handshake(secret_b(), secret_a());
  EXPECT_FALSE(r.acceptor_ok);
  EXPECT_FALSE(r.confirm_sent);  // the acceptor's proof is withheld
  EXPECT_NE(r.acceptor_failure.find("does not verify"), std::string::npos) << r.acceptor_failure;
}

TEST(DistAuth, WrongSecretAcceptorIsRejected) {
  // An impostor listener with another secret: it cannot verify us, and if it
  // answered anyway its proof would not verify on our side.
  Handshake acc(AuthRole::acceptor, secret_b()), ini(AuthRole::initiator, secret_a());
  ini.start();
  auto challenge = acc.start();
  auto response = ini.on_frame(*challenge);
  Nonce ni;
  std::memcpy(ni.data(), response->payload.data(), 32);
  Proof forged = auth_proof(secret_b(), AuthRole::acceptor, acc.own_nonce(), ni);
  ini.on_frame({FrameType::auth_confirm, std::vector<uint8_t>(forged.begin(), forged.end())});
  EXPECT_TRUE(ini.failed());
  EXPECT_NE(ini.failure().find("acceptor's proof does not verify"), std::string::npos) << ini.failure();
}

TEST(DistAuth, ReplayedResponseRejected) {
  RunSecret s = secret_a();
  Handshake acc1(AuthRole::acceptor, s), ini(AuthRole::initiator, s);
  ini.start();
  auto response = ini.on_frame(*acc1.start());
  ASSERT_TRUE(acc1.on_frame(*response).has_value());  // the genuine session
  Handshake acc2(AuthRole::acceptor, s);               // an eavesdropper replays it later
  acc2.start();
  EXPECT_FALSE(acc2.on_frame(*response).has_value());
  EXPECT_TRUE(acc2.failed());
}

TEST(DistAuth, ReflectedProofRejected) {
  RunSecret s = secret_a();
  // The initiator's own proof sent back as the acceptor's confirmation.
  Handshake acc(AuthRole::acceptor, s), ini(AuthRole::initiator, s);
  ini.start();
  auto response = ini.on_frame(*acc.start());
  Frame reflected{FrameType::auth_confirm,
                  std::vector<uint8_t>(response->payload.begin() + 32, response->payload.end())};
  ini.on_frame(reflected);
  EXPECT_TRUE(ini.failed());
  // An initiator that echoes the acceptor's nonce.
  Handshake acc2(AuthRole::acceptor, s);
  auto ch = acc2.start();
  std::vector<uint8_t> echo(ch->payload);
  echo.resize(64, 0);
  acc2.on_frame({FrameType::auth_response, echo});
  EXPECT_TRUE(acc2.failed());
  EXPECT_NE(acc2.failure().find("echoed"), std::string::npos) << acc2.failure();
  // A challenge equal to a nonce this process issued (relay through us).
  Handshake acc3(AuthRole::acceptor, s);
  auto ch3 = acc3.start();
  Nonce mine = acc3.own_nonce();
  Handshake ini3(AuthRole::initiator, s, [&](const Nonce& n) { return n == mine; });
  ini3.start();
  EXPECT_FALSE(ini3.on_frame(*ch3).has_value());
  EXPECT_TRUE(ini3.failed());
}

TEST(DistAuth, ProofsBindRoleVersionAndNonces) {
  RunSecret s = secret_a();
  Nonce a = fresh_nonce(), b = fresh_nonce();
  EXPECT_NE(a, b);  // fresh per call
  Proof p = auth_proof(s, AuthRole::initiator, a, b);
  EXPECT_TRUE(auth_verify(s, AuthRole::initiator, a, b, p));
  EXPECT_FALSE(auth_verify(s, AuthRole::acceptor, a, b, p));
  EXPECT_FALSE(auth_verify(s, AuthRole::initiator, b, a, p));
  EXPECT_FALSE(auth_verify(s, AuthRole::initiator, a, b, p, kProtocolVersion + 1));
  EXPECT_FALSE(auth_verify(secret_b(), AuthRole::initiator, a, b, p));
}

TEST(DistAuth, NoncesAreFreshPerHandshake) {
  RunSecret s = secret_a();
  Handshake a1(AuthRole::acceptor, s), a2(AuthRole::acceptor, s);
  auto c1 = a1.start(), c2 = a2.start();
  EXPECT_NE(c1->payload, c2->payload);
  Handshake i1(AuthRole::initiator, s), i2(AuthRole::initiator, s);
  i1.start();
  i2.start();
  auto r1 = i1.on_frame(*c1), r2 = i2.on_frame(*c1);
  EXPECT_NE(std::vector<uint8_t>(r1->payload.begin(), r1->payload.begin() + 32),
            std::vector<uint8_t>(r2->payload.begin(), r2->payload.begin() + 32));
}

TEST(DistAuth, GarbageAndOutOfOrderFramesFail) {
  RunSecret s = secret_a();
  Handshake acc(AuthRole::acceptor, s);
  acc.start();
  acc.on_frame({FrameType::auth_confirm, pattern(32, 1)});
  EXPECT_TRUE(acc.failed());
  Handshake ini(AuthRole::initiator, s);
  ini.start();
  ini.on_frame({FrameType::auth_challenge, pattern(31, 1)});
  EXPECT_TRUE(ini.failed());
  auto ok = run_handshake(s, s);
  ASSERT_TRUE(ok.acceptor_ok);
}

TEST(DistAuth, SecretFile) {
  auto dir = std::filesystem::temp_directory_path() / ("intellect_secret_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, const std::string& body, mode_t mode) {
    auto p = (dir / name).string();
    FILE* f = std::fopen(p.c_str(), "wb");
    std::fwrite(body.data(), 1, body.size(), f);
    std::fclose(f);
    ::chmod(p.c_str(), mode);
    return p;
  };
  std::string hex64(64, 'f');
  auto good = write("good", hex64 + "\n", 0600);
  EXPECT_EQ(load_run_secret(good).bytes().size(), 64u);  // newline dropped
  EXPECT_THROW(load_run_secret(write("short", "0123456789\n", 0600)), Error);
  EXPECT_THROW(load_run_secret(write("empty", "", 0600)), Error);
  try {
    load_run_secret(write("world", hex64, 0644));
    FAIL() << "a world-readable secret was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chmod 600"), std::string::npos) << e.what();
  }
  std::string warned;
  load_run_secret(write("group", hex64, 0640), [&](const std::string& m) { warned = m; });
  EXPECT_NE(warned.find("group"), std::string::npos);
  EXPECT_THROW(load_run_secret((dir / "missing").string()), Error);
  std::filesystem::remove_all(dir);
}

// --- transport on loopback -----------------------------------------------------

namespace {

struct LogSink {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> fn() {
    return [this](const std::string& m) {
      std::lock_guard lk(mu);
      lines.push_back(m);
    };
  }
  bool contains(const std::string& s) {
    std::lock_guard lk(mu);
    for (auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};

TransportOptions options(RunSecret s, LogSink* sink = nullptr) {
  TransportOptions o;
  o.secret = std::move(s);
  o.handshake_timeout = 3000ms;
  o.io_timeout = 3000ms;
  if (sink) o.log = sink->fn();
  return o;
}

ConnId wait_authenticated(Transport& t) {
  auto e = t.next_event(deadline_in(3000ms));
  EXPECT_TRUE(e.has_value());
  if (!e) return 0;
  EXPECT_EQ(e->kind, TransportEvent::Kind::authenticated);
  EXPECT_TRUE(e->inbound);
  return e->conn;
}

// A blocking client socket with bounded reads, for playing a misbehaving peer.
struct RawSocket {
  int fd = -1;
  explicit RawSocket(uint16_t port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  ~RawSocket() { ::close(fd); }
  void send_all(const std::vector<uint8_t>& b) {
    ASSERT_EQ(::send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  }
  // Everything until EOF (or a 5 s silence).
  std::vector<uint8_t> read_until_eof() {
    std::vector<uint8_t> all;
    uint8_t buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      all.insert(all.end(), buf, buf + n);
    }
    return all;
  }
  std::vector<uint8_t> read_exact(size_t n) {
    std::vector<uint8_t> out(n);
    size_t got = 0;
    while (got < n) {
      ssize_t k = ::recv(fd, out.data() + got, n - got, 0);
      if (k <= 0) break;
      got += static_cast<size_t>(k);
    }
    out.resize(got);
    return out;
  }
};

}  // namespace

TEST(DistTransport, ExchangeBothWays) {
  Transport a(options(secret_a())), b(options(secret_a()));
  uint16_t port = a.listen("127.0.0.1", 0);
  ASSERT_NE(port, 0);
  ConnId ab = b.connect("127.0.0.1", port, deadline_in(3000ms));
  ConnId ba = wait_authenticated(a);
  ASSERT_TRUE(b.is_open(ab));
  ASSERT_TRUE(a.is_open(ba));

  auto big = pattern(32 << 20, 77);
  b.send(ab, {FrameType::control, pattern(100, 1)}, deadline_in(3000ms));
  b.send(ab, {FrameType::data, big}, deadline_in(3000ms));
  b.send(ab, {FrameType::control, {}}, deadline_in(3000ms));
  a.send(ba, {FrameType::data, pattern(5000, 2)}, deadline_in(3000ms));

  auto m1 = a.recv(ba, deadline_in(3000ms));
  ASSERT_TRUE(m1);
  EXPECT_EQ(m1->frame.payload, pattern(100, 1));
  auto m2 = a.recv(kAnyConn, deadline_in(5000ms));
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->conn, ba);
  EXPECT_EQ(m2->frame.type, FrameType::data);
  EXPECT_TRUE(m2->frame.payload == big);
  auto m3 = a.recv(ba, deadline_in(3000ms));
  ASSERT_TRUE(m3);
  EXPECT_TRUE(m3->frame.payload.empty());
  auto r = b.recv(ab, deadline_in(3000ms));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->frame.payload, pattern(5000, 2));
  EXPECT_FALSE(a.recv(ba, deadline_in(20ms)).has_value());  // nothing more: times out

  // Handshake types and oversize frames are refused at send().
  EXPECT_THROW(b.send(ab, {FrameType::auth_confirm, {}}, deadline_in(100ms)), Error);
  EXPECT_THROW(b.send(ab, {FrameType::control, pattern((64 << 10) + 1, 3)}, deadline_in(100ms)), Error);

  // A graceful close delivers what was sent before it.
  a.send(ba, {FrameType::control, pattern(10, 4)}, deadline_in(1000ms));
  a.close(ba, "test done");
  EXPECT_THROW(a.send(ba, {FrameType::control, {}}, deadline_in(100ms)), Error);
  auto last = b.recv(ab, deadline_in(3000ms));
  ASSERT_TRUE(last);
  EXPECT_EQ(last->frame.payload, pattern(10, 4));
  EXPECT_THROW(b.recv(ab, deadline_in(3000ms)), Error);
  EXPECT_FALSE(b.is_open(ab));
  auto e = b.next_event(deadline_in(1000ms));  // b's own dial, announced too
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, TransportEvent::Kind::authenticated);
  EXPECT_FALSE(e->inbound);
  e = b.next_event(deadline_in(1000ms));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind, TransportEvent::Kind::closed);
  EXPECT_EQ(e->conn, ab);
  EXPECT_NE(e->reason.find("peer closed"), std::string::npos) << e->reason;
  EXPECT_THROW(b.send(ab, {FrameType::control, {}}, deadline_in(100ms)), Error);
}

TEST(DistTransport, WrongSecretIsRefused) {
  LogSink log;
  Transport a(options(secret_a(), &log)), b(options(secret_b()));
  uint16_t port = a.listen("127.0.0.1", 0);
  try {
    b.connect("127.0.0.1", port, deadline_in(3000ms));
    FAIL() << "connected with the wrong secret";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("during the handshake"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(a.next_event(deadline_in(50ms)).has_value());  // never announced
  for (int i = 0; i < 100 && !log.contains("authentication failed"); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(log.contains("authentication failed"));

  // What the refused side sees on the wire: the acceptor's nonce, then EOF.
  RawSocket raw(port);
  auto challenge = raw.read_exact(kFrameHeaderSize + kNonceBytes);
  ASSERT_EQ(challenge.size(), kFrameHeaderSize + kNonceBytes);
  FrameDecoder dec(FrameDecoder::Phase::handshake);
  ASSERT_EQ(dec.feed(challenge.data(), challenge.size()), challenge.size());
  ASSERT_TRUE(dec.ready());
  Frame ch = dec.take();
  Handshake impostor(AuthRole::initiator, secret_b());
  impostor.start();
  raw.send_all(encode_frame(*impostor.on_frame(ch)));
  EXPECT_TRUE(raw.read_until_eof().empty());  // no proof, no frame: closed
}

// A listener that answers the handshake with a proof made from another
// secret (an impostor, or another run's node): the dialer detects it, and
// connect() says so with AuthenticationFailed, which callers do not retry.
TEST(DistTransport, ImpostorAcceptorIsAnAuthenticationFailure) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 1), 0);
  socklen_t len = sizeof a;
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  const uint16_t port = ntohs(a.sin_port);
  std::thread impostor([lfd] {
    const int fd = ::accept(lfd, nullptr, nullptr);
    if (fd < 0) return;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    Handshake acc(AuthRole::acceptor, secret_b());
    const std::vector<uint8_t> challenge = encode_frame(*acc.start());
    ::send(fd, challenge.data(), challenge.size(), MSG_NOSIGNAL);
    FrameDecoder dec(FrameDecoder::Phase::handshake);
    uint8_t byte = 0;
    while (!dec.ready() && ::recv(fd, &byte, 1, 0) == 1) dec.feed(&byte, 1);
    if (dec.ready()) {
      const Frame response = dec.take();
      Nonce ni;
      std::memcpy(ni.data(), response.payload.data(), ni.size());
      const Proof forged = auth_proof(secret_b(), AuthRole::acceptor, acc.own_nonce(), ni);
      const std::vector<uint8_t> confirm =
          encode_frame({FrameType::auth_confirm, std::vector<uint8_t>(forged.begin(), forged.end())});
      ::send(fd, confirm.data(), confirm.size(), MSG_NOSIGNAL);
      while (::recv(fd, &byte, 1, 0) == 1) {
      }
    }
    ::close(fd);
  });
  Transport t(options(secret_a()));
  try {
    t.connect("127.0.0.1", port, deadline_in(3000ms));
    ADD_FAILURE() << "connected to an impostor";
  } catch (const AuthenticationFailed& e) {
    EXPECT_NE(std::string(e.what()).find("authentication failed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("run secret"), std::string::npos) << e.what();
  } catch (const Error& e) {
    ADD_FAILURE() << "an impostor's bad proof was reported as an ordinary failure: " << e.what();
  }
  impostor.join();
  ::close(lfd);
}

TEST(DistTransport, StalledPeersAreDropped) {
  LogSink log;
  auto o = options(secret_a(), &log);
  o.handshake_timeout = 5000ms;
  o.io_timeout = 200ms;
  Transport a(std::move(o));
  uint16_t port = a.listen("127.0.0.1", 0);

  auto t0 = MeshClock::now();
  {  // half a header before authenticating
    RawSocket raw(port);
    raw.read_exact(kFrameHeaderSize + kNonceBytes);
    auto h = encode_frame_header(FrameType::auth_response, 64);
    raw.send_all(std::vector<uint8_t>(h.begin(), h.begin() + 6));
    raw.read_until_eof();
  }
  auto waited = MeshClock::now() - t0;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 2000ms);
  EXPECT_TRUE(log.contains("stalled in the middle of a frame"));

  {  // authenticates properly, then stalls mid-frame
    RawSocket raw(port);
    auto bytes = raw.read_exact(kFrameHeaderSize + kNonceBytes);
    FrameDecoder dec(FrameDecoder::Phase::handshake);
    dec.feed(bytes.data(), bytes.size());
    ASSERT_TRUE(dec.ready());
    Handshake me(AuthRole::initiator, secret_a());
    me.start();
    raw.send_all(encode_frame(*me.on_frame(dec.take())));
    auto confirm = raw.read_exact(kFrameHeaderSize + kProofBytes);
    dec.feed(confirm.data(), confirm.size());
    ASSERT_TRUE(dec.ready());
    me.on_frame(dec.take());
    ASSERT_TRUE(me.done());
    ConnId id = wait_authenticated(a);
    auto frame = encode_frame({FrameType::control, pattern(1000, 5)});
    frame.resize(500);
    raw.send_all(frame);
    auto e = a.next_event(deadline_in(2000ms));
    ASSERT_TRUE(e);
    EXPECT_EQ(e->kind, TransportEvent::Kind::closed);
    EXPECT_EQ(e->conn, id);
    EXPECT_NE(e->reason.find("stalled"), std::string::npos) << e->reason;
  }
  {  // never finishes the handshake at all (silent): the handshake timeout
    auto o2 = options(secret_a(), &log);
    o2.handshake_timeout = 150ms;
    Transport c(std::move(o2));
    uint16_t p2 = c.listen("127.0.0.1", 0);
    RawSocket raw(p2);
    auto start = MeshClock::now();
    raw.read_until_eof();
    EXPECT_LT(MeshClock::now() - start, 2000ms);
    EXPECT_TRUE(log.contains("no completed handshake"));
  }
}

TEST(DistTransport, BackpressureBlocksThenTimesOut) {
  auto ro = options(secret_a());
  ro.max_inbox_bytes = 256 << 10;
  auto so = options(secret_a());
  so.max_queued_bytes = 512 << 10;
  so.io_timeout = 10000ms;  // the send deadline, not the stall detector, must fire
  Transport receiver(std::move(ro)), sender(std::move(so));
  uint16_t port = receiver.listen("127.0.0.1", 0);
  ConnId c = sender.connect("127.0.0.1", port, deadline_in(3000ms));
  ConnId rc = wait_authenticated(receiver);

  const size_t frame_bytes = 256 << 10;
  int sent = 0;
  bool timed_out = false;
  auto start = MeshClock::now();
  for (int i = 0; i < 400 && !timed_out; ++i) {
    auto t0 = MeshClock::now();
    try {
      sender.send(c, {FrameType::data, pattern(frame_bytes, i)}, deadline_in(150ms));
      ++sent;
    } catch (const Error& e) {
      timed_out = true;
      EXPECT_GE(MeshClock::now() - t0, 140ms);  // it blocked until its deadline
      EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
    }
  }
  ASSERT_TRUE(timed_out) << "sent " << sent << " frames without blocking";
  EXPECT_LT(MeshClock::now() - start, 5000ms);
  EXPECT_TRUE(sender.is_open(c));  // a send timeout is not a connection failure

  // Draining the receiver lets the sender go on; every frame arrives in order.
  std::thread drain([&] {
    for (int i = 0; i < sent + 1; ++i) {
      auto m = receiver.recv(rc, deadline_in(5000ms));
      ASSERT_TRUE(m) << "frame " << i;
      ASSERT_EQ(m->frame.payload.size(), frame_bytes);
      if (i < sent) {
        EXPECT_EQ(m->frame.payload[0], pattern(1, i)[0]);
      }
    }
  });
  sender.send(c, {FrameType::data, pattern(frame_bytes, 999)}, deadline_in(5000ms));
  drain.join();
}

TEST(DistTransport, ShutdownWithOpenConnections) {
  auto start = MeshClock::now();
  {
    auto a = std::make_unique<Transport>(options(secret_a()));
    Transport b(options(secret_a()));
    uint16_t port = a->listen("127.0.0.1", 0);
    std::vector<ConnId> conns;
    for (int i = 0; i < 3; ++i) conns.push_back(b.connect("127.0.0.1", port, deadline_in(3000ms)));
    for (ConnId c : conns) b.send(c, {FrameType::data, pattern(1 << 20, 1)}, deadline_in(3000ms));
    // A recv blocked on b is woken when a shuts down with the connections open.
    std::thread waiter([&] { EXPECT_THROW(b.recv(conns[0], deadline_in(5000ms)), Error); });
    std::this_thread::sleep_for(20ms);
    a.reset();
    waiter.join();
  }  // b shuts down with closed connections and unread events
  EXPECT_LT(MeshClock::now() - start, 3000ms);
}

TEST(DistTransport, ConnectFailuresAreReported) {
  Transport a(options(secret_a()));
  uint16_t port;
  {
    Transport tmp(options(secret_a()));
    port = tmp.listen("127.0.0.1", 0);
  }  // now closed: connection refused
  EXPECT_THROW(a.connect("127.0.0.1", port, deadline_in(2000ms)), Error);
  EXPECT_THROW(a.connect("not-an-ip", 1, deadline_in(100ms)), Error);
  EXPECT_THROW(a.listen("127.0.0.1", a.listen("127.0.0.1", 0)), Error);  // port in use
}
