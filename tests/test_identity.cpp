// Node identity (dist/identity.h): Ed25519 keys, their files, fingerprints,
// and the coordinator's allowlist.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "dist/identity.h"
#include "test_util.h"
#include "util/error.h"
#include "util/file.h"

namespace intellect {
namespace {

std::string temp_dir(const std::string& name) {
  const std::string d = (std::filesystem::temp_directory_path() / ("intellect_identity_" + name)).string();
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

TEST(Identity, SignaturesVerifyOnlyForTheirKeyAndMessage) {
  const NodeKey a = NodeKey::generate(), b = NodeKey::generate();
  const std::vector<uint8_t> msg{1, 2, 3, 4};
  const Signature s = a.sign(msg);
  EXPECT_TRUE(verify_signature(a.public_key(), msg, s));
  EXPECT_FALSE(verify_signature(b.public_key(), msg, s));
  std::vector<uint8_t> other = msg;
  other[2] ^= 1;
  EXPECT_FALSE(verify_signature(a.public_key(), other, s));
  Signature bad = s;
  bad[10] ^= 0x40;
  EXPECT_FALSE(verify_signature(a.public_key(), msg, bad));
}

TEST(Identity, FingerprintsAreShortStableAndDistinct) {
  const NodeKey a = NodeKey::generate(), b = NodeKey::generate();
  EXPECT_EQ(a.fingerprint().rfind("ed25519:", 0), 0u);
  EXPECT_EQ(a.fingerprint().size(), 8u + 16u);
  EXPECT_EQ(a.fingerprint(), fingerprint(a.public_key()));
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  EXPECT_EQ(parse_public_key(public_key_hex(a.public_key()), "t"), a.public_key());
  EXPECT_THROW(parse_public_key("abc", "t"), Error);
  EXPECT_THROW(parse_public_key(std::string(64, 'g'), "t"), Error);
}

TEST(Identity, KeyFilesRoundTripWithMode600AndAreNeverOverwritten) {
  const std::string d = temp_dir("files");
  const NodeKey k = NodeKey::generate();
  write_node_key(d + "/node.key", k, "node-a");
  struct stat st;
  ASSERT_EQ(::stat((d + "/node.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const NodeKey back = load_node_key(d + "/node.key");
  EXPECT_EQ(back.public_key(), k.public_key());
  const std::vector<uint8_t> msg{9, 9};
  EXPECT_TRUE(verify_signature(k.public_key(), msg, back.sign(msg)));
  // The .pub file is one allowlist line.
  const Allowlist a = Allowlist::parse(read_text_file(d + "/node.key.pub"), "pub");
  EXPECT_TRUE(a.allows(k.public_key()));
  EXPECT_EQ(a.name_of(k.public_key()), "node-a");
  EXPECT_NE(test::error_of([&] { write_node_key(d + "/node.key", NodeKey::generate(), ""); }).find("never overwritten"),
            std::string::npos);
  EXPECT_EQ(load_node_key(d + "/node.key").public_key(), k.public_key());
}

TEST(Identity, LoadingRefusesReadableDamagedAndForeignFiles) {
  const std::string d = temp_dir("refuse");
  const NodeKey k = NodeKey::generate();
  write_node_key(d + "/k", k, "");
  ::chmod((d + "/k").c_str(), 0644);
  EXPECT_NE(test::error_of([&] { load_node_key(d + "/k"); }).find("chmod 600"), std::string::npos);
  ::chmod((d + "/k").c_str(), 0600);
  EXPECT_NE(test::error_of([&] { load_node_key(d + "/missing"); }).find("intellect_keygen"), std::string::npos);
  // A secret whose public half was altered: damaged.
  std::string text = k.encode_secret_file();
  const size_t pos = text.size() - 3;
  text[pos] = text[pos] == '0' ? '1' : '0';
  EXPECT_NE(test::error_of([&] { NodeKey::decode_secret_file(text, "x"); }).find("damaged"), std::string::npos);
  EXPECT_THROW(NodeKey::decode_secret_file("-----BEGIN OPENSSH PRIVATE KEY-----\n", "x"), Error);
  EXPECT_THROW(NodeKey::decode_secret_file("intellect-node-key v1\nsecret 00\n", "x"), Error);
}

TEST(Identity, AllowlistParsesCommentsNamesAndRefusesBadLines) {
  const NodeKey a = NodeKey::generate(), b = NodeKey::generate(), c = NodeKey::generate();
  const std::string text = "# the run's members\n" + public_key_hex(a.public_key()) + " alpha\n\n" +
                           public_key_hex(b.public_key()) + "   # no name\n";
  const Allowlist l = Allowlist::parse(text, "list");
  EXPECT_EQ(l.size(), 2u);
  EXPECT_TRUE(l.allows(a.public_key()));
  EXPECT_TRUE(l.allows(b.public_key()));
  EXPECT_FALSE(l.allows(c.public_key()));
  EXPECT_EQ(l.name_of(a.public_key()), "alpha");
  EXPECT_EQ(l.name_of(b.public_key()), b.fingerprint());
  EXPECT_NE(test::error_of([&] { Allowlist::parse(text + "zz\n", "list"); }).find("list:5"), std::string::npos);
  EXPECT_NE(test::error_of([&] { Allowlist::parse(text + public_key_hex(a.public_key()) + "\n", "list"); })
                .find("listed twice"),
            std::string::npos);
}

TEST(Identity, AllowlistFileRereadsOnChangeAndKeepsTheOldListWhenTheNewOneIsBad) {
  const std::string d = temp_dir("reload");
  const NodeKey a = NodeKey::generate(), b = NodeKey::generate();
  const std::string path = d + "/allowlist";
  write_text(path, public_key_hex(a.public_key()) + "\n" + public_key_hex(b.public_key()) + "\n");
  AllowlistFile f(path);
  EXPECT_EQ(f.current().size(), 2u);
  std::string error;
  EXPECT_FALSE(f.reload_if_changed(&error));  // unchanged
  // b revoked: the file is rewritten (a rename, as editors and write_file_atomic do).
  const std::string only_a = public_key_hex(a.public_key()) + "\n";
  write_file_atomic(path, only_a.data(), only_a.size());
  EXPECT_TRUE(f.reload_if_changed(&error)) << error;
  EXPECT_FALSE(f.current().allows(b.public_key()));
  // A typo keeps the previous list, said once.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  write_text(path, only_a + "not-a-key\n");
  EXPECT_FALSE(f.reload_if_changed(&error));
  EXPECT_NE(error.find("keeping the previous list of 1"), std::string::npos) << error;
  EXPECT_TRUE(f.current().allows(a.public_key()));
  error.clear();
  EXPECT_FALSE(f.reload_if_changed(&error));
  EXPECT_TRUE(error.empty()) << error;
  // Forced (SIGHUP) rereads even an unchanged file.
  write_file_atomic(path, only_a.data(), only_a.size());
  EXPECT_TRUE(f.reload_if_changed(&error, true));
  EXPECT_THROW(AllowlistFile(d + "/none"), Error);
}

}  // namespace
}  // namespace intellect
