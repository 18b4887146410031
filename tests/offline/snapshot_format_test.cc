// The snapshot file: what SnapshotWriter writes SnapshotReader reads back
// field for field; lookups find every subject and no one else; signing
// catches any change to the file; damaged files are refused, never read.
#include "core/snapshot_format.h"

#include <cstring>
#include <string>
#include <vector>

#include "core/snapshot_signing.h"
#include "core/subject_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/test_util.h"

namespace consent::snapshot {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::Subject Rich() {
  v1::Subject s;
  s.set_user_id("rich");
  s.mutable_attributes()->set_jurisdiction("GB");
  s.mutable_attributes()->mutable_birth_date()->set_year(1990);
  s.mutable_attributes()->mutable_birth_date()->set_month(5);
  s.mutable_attributes()->mutable_birth_date()->set_day(17);
  s.mutable_attributes()->set_account_state(v1::ACCOUNT_STATE_ACTIVE);
  v1::Preference* p = s.add_preferences();
  p->set_purpose("ai_training");
  p->set_state(v1::PREFERENCE_STATE_OBJECTED);
  p->mutable_effective_time()->set_seconds(-86'400);  // before 1970
  p->mutable_expire_time()->set_seconds(2'000'000'000);
  p->mutable_expire_time()->set_nanos(5);
  p->set_revision(7);
  v1::Preference* q = s.add_preferences();
  q->set_purpose("ai_training.generative");
  q->set_state(v1::PREFERENCE_STATE_CONSENTED);
  q->set_revision(9);
  v1::NoticeDelivery* n = s.add_notices();
  n->set_notice_id("n1");
  n->set_notice_version("v1");
  n->add_purposes("ai_training");
  n->mutable_delivery_time()->set_seconds(1'700'000'000);
  n->mutable_delivery_time()->set_nanos(1);  // counts from the next second
  s.set_exclusion_count(3);
  s.set_revision(11);
  return s;
}

// Writes a snapshot of `subjects` (with `exclusions` for the first) into
// one string.
std::string Write(const std::vector<v1::Subject>& subjects,
                  const std::vector<Exclusion>& exclusions, const SnapshotInfo& info) {
  std::string out;
  SnapshotWriter writer([&out](absl::string_view bytes) {
    out.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  });
  SubjectViewArena arena;
  for (size_t i = 0; i < subjects.size(); ++i) {
    const SubjectView* view = arena.Decode(DecisionView(subjects[i]));
    EXPECT_NE(view, nullptr);
    EXPECT_TRUE(
        writer.Add(subjects[i].user_id(), *view, i == 0 ? exclusions : std::vector<Exclusion>{})
            .ok());
  }
  auto size = writer.Finish(info);
  EXPECT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(size.value_or(0), out.size());
  return out;
}

TEST(SnapshotFormatTest, ReadsBackWhatWasWritten) {
  SnapshotInfo info;
  info.revision = 42;
  info.create_time = absl::FromUnixNanos(1'750'000'000'123'456'789);
  info.policy_text = "version: \"p1\"";
  info.pseudonymized = true;
  v1::Subject plain;
  plain.set_user_id("plain");
  plain.set_revision(3);
  const std::string bytes = Write(
      {Rich(), plain},
      {{"post-2", "ai_training"}, {"post-1", "ai_training.ranking"}, {"post-1", "ai_training"}},
      info);
  auto reader = SnapshotReader::Open(bytes);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->info().revision, 42);
  EXPECT_EQ(reader->info().create_time, info.create_time);
  EXPECT_EQ(reader->info().policy_text, "version: \"p1\"");
  EXPECT_TRUE(reader->info().pseudonymized);
  EXPECT_EQ(reader->info().subjects, 2);
  EXPECT_EQ(reader->info().exclusions, 3);

  const uint64_t offset = reader->Find("rich", IdHash("rich"));
  ASSERT_NE(offset, 0u);
  SnapshotReader::Scratch scratch;
  SubjectView view;
  ASSERT_TRUE(reader->Decode(offset, "post-1", &scratch, &view).ok());
  EXPECT_EQ(view.jurisdiction, "GB");
  ASSERT_TRUE(view.birth_date.has_value());
  EXPECT_EQ(view.birth_date->year, 1990);
  EXPECT_EQ(view.birth_date->month, 5);
  EXPECT_EQ(view.birth_date->day, 17);
  EXPECT_EQ(view.account_state, v1::ACCOUNT_STATE_ACTIVE);
  EXPECT_EQ(view.revision, 11);
  EXPECT_EQ(view.exclusion_count, 3);
  ASSERT_EQ(view.preferences.size(), 2u);
  EXPECT_EQ(view.preferences[0].purpose, "ai_training");
  EXPECT_EQ(view.preferences[0].state, v1::PREFERENCE_STATE_OBJECTED);
  EXPECT_EQ(view.preferences[0].effective_time, absl::FromUnixSeconds(-86'400));
  EXPECT_EQ(view.preferences[0].expire_time,
            absl::FromUnixSeconds(2'000'000'000) + absl::Nanoseconds(5));
  EXPECT_EQ(view.preferences[0].revision, 7);
  EXPECT_EQ(view.preferences[1].purpose, "ai_training.generative");
  EXPECT_EQ(view.preferences[1].effective_time, std::nullopt);
  EXPECT_EQ(view.preferences[1].expire_time, std::nullopt);
  ASSERT_EQ(view.notices.size(), 1u);
  EXPECT_EQ(view.notices[0].purpose, "ai_training");
  EXPECT_EQ(view.notices[0].delivery_time, absl::FromUnixSeconds(1'700'000'001));
  EXPECT_THAT(scratch.excluded, ElementsAre("ai_training", "ai_training.ranking"));

  ASSERT_TRUE(reader->Decode(offset, "post-9", &scratch, &view).ok());
  EXPECT_TRUE(scratch.excluded.empty());

  const uint64_t plain_offset = reader->Find("plain", IdHash("plain"));
  ASSERT_NE(plain_offset, 0u);
  ASSERT_TRUE(reader->Decode(plain_offset, "post-1", &scratch, &view).ok());
  EXPECT_EQ(view.jurisdiction, "");
  EXPECT_FALSE(view.birth_date.has_value());
  EXPECT_TRUE(view.preferences.empty());
  EXPECT_EQ(view.revision, 3);
  EXPECT_EQ(reader->Find("nobody", IdHash("nobody")), 0u);
  EXPECT_EQ(reader->Find("ric", IdHash("ric")), 0u);
}

TEST(SnapshotFormatTest, FindsEveryOneOfManyAndNoOneElse) {
  std::vector<v1::Subject> subjects;
  for (int i = 0; i < 5000; ++i) {
    v1::Subject s;
    s.set_user_id(absl::StrCat("user-", i));
    s.set_revision(i + 1);
    subjects.push_back(s);
  }
  const std::string bytes = Write(subjects, {}, SnapshotInfo{});
  auto reader = SnapshotReader::Open(bytes);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::string> ids;
  for (int i = 0; i < 5100; ++i) ids.push_back(absl::StrCat("user-", i));
  SnapshotReader::Scratch scratch;
  for (int i = 0; i < 5100; ++i) {
    const uint64_t located = reader->Locate(IdHash(ids[i]));
    reader->Load(located);
    const uint64_t offset = reader->Find(ids[i], IdHash(ids[i]));
    EXPECT_EQ(reader->Find(ids[i], IdHash(ids[i]), located), offset) << ids[i];
    // Given another id's record (a tag collision), the slots decide.
    const uint64_t other = reader->Locate(IdHash(ids[(i + 1) % 5000]));
    EXPECT_EQ(reader->Find(ids[i], IdHash(ids[i]), other), offset) << ids[i];
    // Locate names the first record under the id's tag: nearly always
    // the id's own (a 24-bit tag in 5,000 ids).
    EXPECT_EQ(located, offset) << ids[i];
    if (i >= 5000) {
      EXPECT_EQ(offset, 0u) << ids[i];
      continue;
    }
    ASSERT_NE(offset, 0u) << ids[i];
    SubjectView view;
    ASSERT_TRUE(reader->Decode(offset, "", &scratch, &view).ok());
    EXPECT_EQ(view.revision, i + 1);
  }
}

TEST(SnapshotFormatTest, AnIdOneByteOffIsNotFound) {
  // Ids of every length up to 40 are compared in pieces (SameId); a
  // twin differing in any one byte, or a byte longer, is someone else.
  std::vector<v1::Subject> subjects;
  for (int size = 1; size <= 40; ++size) {
    v1::Subject s;
    for (int i = 0; i < size; ++i) s.mutable_user_id()->push_back(static_cast<char>('a' + i % 26));
    s.set_revision(size);
    subjects.push_back(s);
  }
  const std::string bytes = Write(subjects, {}, SnapshotInfo{});
  auto reader = SnapshotReader::Open(bytes);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (const v1::Subject& s : subjects) {
    const std::string& id = s.user_id();
    const uint64_t offset = reader->Find(id, IdHash(id));
    ASSERT_NE(offset, 0u) << id;
    for (size_t i = 0; i < id.size(); ++i) {
      std::string twin = id;
      twin[i] = '#';
      // Given the real id's record, as a batch would after a tag collision.
      EXPECT_EQ(reader->Find(twin, IdHash(twin), offset), 0u) << twin;
    }
    const std::string longer = id + "#";
    EXPECT_EQ(reader->Find(longer, IdHash(longer), offset), 0u) << longer;
  }
}

TEST(SnapshotFormatTest, IdHashIsTheSameEverywhere) {
  // Fixed values: files written on one machine are read on another.
  EXPECT_EQ(IdHash(""), IdHash(std::string()));
  EXPECT_NE(IdHash("a"), IdHash("b"));
  EXPECT_NE(IdHash("user-12345678"), IdHash("user-12345679"));
  EXPECT_EQ(IdHash("alice"), 0xfd9ddeb77d68499du) << std::hex << IdHash("alice");
}

TEST(SnapshotFormatTest, RefusesWhatIsNotAWholeSnapshot) {
  const std::string bytes = Write({Rich()}, {}, SnapshotInfo{});
  EXPECT_THAT(SnapshotReader::Open("hello").status().message(), HasSubstr("no snapshot header"));
  EXPECT_THAT(SnapshotReader::Open(bytes.substr(0, bytes.size() - 1)).status().message(),
              HasSubstr("no footer"));
  std::string wrong_version = bytes;
  wrong_version[wrong_version.size() - kFooterSize + 8] = 9;
  EXPECT_THAT(SnapshotReader::Open(wrong_version).status().message(),
              HasSubstr("format version 9, this build reads 1"));
  // A slot table with no empty slot (damage the writer never makes): a
  // lookup gives up after every slot instead of probing forever.
  std::string full = bytes;
  const size_t footer = full.size() - kFooterSize;
  uint64_t table_offset, slots;
  std::memcpy(&table_offset, full.data() + footer + 16 + 8 * 12, 8);
  std::memcpy(&slots, full.data() + footer + 16 + 8 * 13, 8);
  std::memset(full.data() + table_offset, 0xff, slots * 8);
  std::vector<uint64_t> aligned((full.size() + 7) / 8);
  std::memcpy(aligned.data(), full.data(), full.size());
  auto reader = SnapshotReader::Open({reinterpret_cast<const char*>(aligned.data()), full.size()});
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->Locate(IdHash("rich")), 0u);
  EXPECT_EQ(reader->Find("rich", IdHash("rich")), 0u);
}

TEST(SnapshotSigningTest, TheSignatureCoversEveryByte) {
  testing::TempDir dir;
  ASSERT_EQ(testing::RunCommand(
                {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir.Sub("a.pem")})
                .exit_code,
            0);
  ASSERT_EQ(testing::RunCommand(
                {"/usr/bin/openssl", "genpkey", "-algorithm", "ed25519", "-out", dir.Sub("b.pem")})
                .exit_code,
            0);
  ASSERT_EQ(testing::RunCommand({"/usr/bin/openssl", "pkey", "-in", dir.Sub("a.pem"), "-pubout",
                                 "-out", dir.Sub("a.pub")})
                .exit_code,
            0);
  auto key = SigningKey::FromPemFile(dir.Sub("a.pem"));
  ASSERT_TRUE(key.ok()) << key.status();
  auto other = SigningKey::FromPemFile(dir.Sub("b.pem"));
  ASSERT_TRUE(other.ok()) << other.status();
  auto public_key = ReadPublicKeyFile(dir.Sub("a.pub"));
  ASSERT_TRUE(public_key.ok()) << public_key.status();
  EXPECT_EQ(*public_key, key->public_key());

  const std::string body = Write({Rich()}, {}, SnapshotInfo{});
  Sha256 sha;
  sha.Update(body);
  const std::string file = body + key->Trailer(sha.Finish()).value();
  auto verified = VerifySigned(file, *public_key);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(*verified, body);

  for (size_t i : {size_t{0}, body.size() / 2, body.size() - 1}) {
    std::string changed = file;
    changed[i] ^= 1;
    EXPECT_THAT(VerifySigned(changed, *public_key).status().message(),
                HasSubstr("was changed after signing"))
        << i;
  }
  std::string bad_signature = file;
  bad_signature.back() ^= 1;
  EXPECT_EQ(VerifySigned(bad_signature, *public_key).status().message(),
            "the signature does not verify");
  EXPECT_THAT(VerifySigned(body, *public_key).status().message(),
              HasSubstr("no signature trailer"));
  EXPECT_THAT(VerifySigned(file, other->public_key()).status().message(),
              HasSubstr("signed by another key"));
  EXPECT_THAT(ReadPublicKeyFile(dir.Sub("a.pem")).status().message(),
              HasSubstr("holds no Ed25519 public key"));
  EXPECT_EQ(ReadPublicKeyFile(dir.Sub("none.pub")).status().code(), absl::StatusCode::kNotFound);
}

TEST(SnapshotSigningTest, PseudonymsAreKeyedHashes) {
  // HMAC-SHA256("key-of-sixteen-b", "alice"), as `openssl dgst -sha256
  // -hmac key-of-sixteen-b` gives it.
  const std::string key = "key-of-sixteen-b";
  const testing::CommandResult expected =
      testing::RunCommand({"/usr/bin/openssl", "dgst", "-sha256", "-hmac", key, "-r"}, "alice");
  ASSERT_EQ(expected.exit_code, 0);
  EXPECT_EQ(Pseudonym(key, "alice"), expected.out.substr(0, 64));
  EXPECT_NE(Pseudonym(key, "alice"), Pseudonym("another-key-1234", "alice"));
}

}  // namespace
}  // namespace consent::snapshot
