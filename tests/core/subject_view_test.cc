#include "core/subject_view.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/proto_time.h"
#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"

namespace consent::storage {
namespace {

// What protobuf's own parse of the same bytes gives: every decision field
// of `view` equals `subject`'s.
void ExpectSameFields(const SubjectView& view, const v1::Subject& subject) {
  const v1::SubjectAttributes& a = subject.attributes();
  EXPECT_EQ(view.jurisdiction, a.jurisdiction());
  ASSERT_EQ(view.birth_date.has_value(), a.has_birth_date());
  if (view.birth_date) {
    EXPECT_EQ(view.birth_date->year, a.birth_date().year());
    EXPECT_EQ(view.birth_date->month, a.birth_date().month());
    EXPECT_EQ(view.birth_date->day, a.birth_date().day());
  }
  EXPECT_EQ(view.account_state, a.account_state());
  EXPECT_EQ(view.exclusion_count, subject.exclusion_count());
  EXPECT_EQ(view.revision, subject.revision());
  ASSERT_EQ(view.preferences.size(), static_cast<size_t>(subject.preferences_size()));
  for (int i = 0; i < subject.preferences_size(); ++i) {
    const v1::Preference& want = subject.preferences(i);
    const PreferenceView& got = view.preferences[static_cast<size_t>(i)];
    EXPECT_EQ(got.purpose, want.purpose()) << i;
    EXPECT_EQ(got.state, want.state()) << i;
    EXPECT_EQ(got.revision, want.revision()) << i;
    ASSERT_EQ(got.effective_time.has_value(), want.has_effective_time()) << i;
    if (got.effective_time) {
      EXPECT_EQ(*got.effective_time, FromProto(want.effective_time())) << i;
    }
    ASSERT_EQ(got.expire_time.has_value(), want.has_expire_time()) << i;
    if (got.expire_time) {
      EXPECT_EQ(*got.expire_time, FromProto(want.expire_time())) << i;
    }
  }
  // One NoticeView per purpose of each notice, in order; a notice without
  // a delivery time is taken as delivered at the end of time.
  size_t k = 0;
  for (const v1::NoticeDelivery& want : subject.notices()) {
    for (const std::string& purpose : want.purposes()) {
      ASSERT_LT(k, view.notices.size());
      const NoticeView& got = view.notices[k++];
      EXPECT_EQ(got.purpose, purpose) << k;
      EXPECT_EQ(got.notice_id, want.notice_id()) << k;
      EXPECT_EQ(got.notice_version, want.notice_version()) << k;
      EXPECT_EQ(got.delivery_time,
                want.has_delivery_time() ? FromProto(want.delivery_time()) : absl::InfiniteFuture())
          << k;
    }
  }
  EXPECT_EQ(k, view.notices.size());
}

bool HasField(const google::protobuf::UnknownFieldSet& fields, uint32_t number) {
  for (int i = 0; i < fields.field_count(); ++i) {
    if (fields.field(i).number() == static_cast<int>(number)) return true;
  }
  return false;
}

// Decodes `bytes` and checks it against protobuf's parse: both accept or
// both reject, and accepted bytes give the same fields.
void ExpectDecodesAsProtobuf(SubjectViewArena& arena, const std::string& bytes) {
  v1::Subject parsed;
  const bool parses = parsed.ParseFromString(bytes);
  const SubjectView* view = arena.Decode(bytes);
  ASSERT_EQ(view != nullptr, parses) << "bytes: " << absl::CEscape(bytes);
  if (view != nullptr) ExpectSameFields(*view, parsed);
}

// A subject with any mix of the fields, the ones decisions do not read
// included (user id, sources, update times). ASCII strings: protobuf
// checks UTF-8, the view does not (see Decode).
v1::Subject RandomSubject(std::mt19937_64& random) {
  auto chance = [&random](int percent) {
    return std::uniform_int_distribution<int>(0, 99)(random) < percent;
  };
  auto number = [&random](int64_t low, int64_t high) {
    return std::uniform_int_distribution<int64_t>(low, high)(random);
  };
  auto timestamp = [&](google::protobuf::Timestamp* t) {
    t->set_seconds(number(-62'135'596'800, 253'402'300'799));
    t->set_nanos(static_cast<int32_t>(number(0, 999'999'999)));
  };
  v1::Subject s;
  if (chance(80)) s.set_user_id(absl::StrCat("user-", number(0, 1'000'000)));
  if (chance(90)) {
    v1::SubjectAttributes* a = s.mutable_attributes();
    if (chance(80)) a->set_jurisdiction(chance(50) ? "GB" : absl::StrCat("US-", number(0, 99)));
    if (chance(70)) {
      v1::Date* d = a->mutable_birth_date();
      if (chance(90)) d->set_year(static_cast<int32_t>(number(-5, 2100)));
      if (chance(90)) d->set_month(static_cast<int32_t>(number(0, 12)));
      if (chance(90)) d->set_day(static_cast<int32_t>(number(0, 31)));
    }
    if (chance(50)) a->set_account_state(static_cast<v1::AccountState>(number(0, 5)));
  }
  const int64_t preferences = chance(40) ? number(1, 4) : 0;
  for (int64_t i = 0; i < preferences; ++i) {
    v1::Preference* p = s.add_preferences();
    p->set_purpose(chance(50) ? "ai_training" : "ai_training.generative");
    p->set_state(static_cast<v1::PreferenceState>(number(0, 4)));
    if (chance(40)) timestamp(p->mutable_effective_time());
    if (chance(40)) timestamp(p->mutable_expire_time());
    if (chance(50)) p->mutable_source()->set_channel("settings");
    p->set_revision(number(0, int64_t{1} << 40));
    if (chance(50)) timestamp(p->mutable_update_time());
  }
  const int64_t notices = chance(30) ? number(1, 3) : 0;
  for (int64_t i = 0; i < notices; ++i) {
    v1::NoticeDelivery* n = s.add_notices();
    if (chance(90)) n->set_notice_id(absl::StrCat("notice-", number(0, 9)));
    if (chance(90)) n->set_notice_version(absl::StrCat("v", number(0, 9)));
    const int64_t purposes = number(0, 3);
    for (int64_t j = 0; j < purposes; ++j) {
      n->add_purposes(chance(50) ? "ai_training" : "ai_training.ranking");
    }
    if (chance(50)) n->set_channel(static_cast<v1::NoticeChannel>(number(0, 4)));
    if (chance(90)) timestamp(n->mutable_delivery_time());
    if (chance(50)) timestamp(n->mutable_record_time());
    n->set_revision(number(0, int64_t{1} << 40));
  }
  if (chance(30)) s.set_exclusion_count(number(0, 1'000));
  s.set_revision(chance(5) ? -number(1, 100) : number(0, int64_t{1} << 50));
  if (chance(50)) timestamp(s.mutable_create_time());
  if (chance(10)) timestamp(s.mutable_delete_time());
  return s;
}

TEST(SubjectViewTest, DecodesWhatProtobufParses) {
  std::mt19937_64 random(20261127);
  SubjectViewArena arena;
  for (int i = 0; i < 3000; ++i) {
    const v1::Subject subject = RandomSubject(random);
    const std::string bytes = subject.SerializeAsString();
    ExpectDecodesAsProtobuf(arena, bytes);
    // Add: the same, from the message.
    ExpectSameFields(*arena.Add(subject), subject);
  }
}

// Two messages one after the other parse as one, merged: scalars of the
// second win, messages merge field by field, repeated fields append.
TEST(SubjectViewTest, MergesFieldsThatOccurMoreThanOnce) {
  std::mt19937_64 random(7);
  SubjectViewArena arena;
  for (int i = 0; i < 2000; ++i) {
    ExpectDecodesAsProtobuf(arena, RandomSubject(random).SerializeAsString() +
                                       RandomSubject(random).SerializeAsString());
  }
  // Dates and timestamps merge inside their own message.
  v1::Subject first, second;
  first.mutable_attributes()->mutable_birth_date()->set_year(1990);
  first.mutable_attributes()->mutable_birth_date()->set_day(3);
  second.mutable_attributes()->mutable_birth_date()->set_month(4);
  ExpectDecodesAsProtobuf(arena, first.SerializeAsString() + second.SerializeAsString());
  const SubjectView* merged = arena.Decode(first.SerializeAsString() + second.SerializeAsString());
  ASSERT_NE(merged, nullptr);
  ASSERT_TRUE(merged->birth_date.has_value());
  EXPECT_EQ(merged->birth_date->year, 1990);
  EXPECT_EQ(merged->birth_date->month, 4);
  EXPECT_EQ(merged->birth_date->day, 3);
}

// Every prefix of a well-formed record: a cut inside a field is rejected
// as protobuf rejects it; a cut between fields is a smaller message.
TEST(SubjectViewTest, EveryPrefixDecodesAsProtobufParsesIt) {
  std::mt19937_64 random(11);
  SubjectViewArena arena;
  int rejected = 0;
  for (int i = 0; i < 200; ++i) {
    const std::string bytes = RandomSubject(random).SerializeAsString();
    for (size_t n = 0; n < bytes.size(); ++n) {
      ExpectDecodesAsProtobuf(arena, bytes.substr(0, n));
      rejected += arena.Decode(bytes.substr(0, n)) == nullptr;
    }
  }
  EXPECT_GT(rejected, 1000);  // the test reaches the failure paths
}

// Fields of wire types the view does not expect are unknown fields, and
// skipped, groups among them.
TEST(SubjectViewTest, SkipsUnknownFieldsAndWireTypes) {
  SubjectViewArena arena;
  const std::vector<std::string> cases = {
      // revision (5) as a length-delimited field, then as a varint.
      std::string("\x2a\x01x\x28\x07", 5),
      // attributes (2) as a varint; exclusion_count (4) as fixed64/fixed32.
      std::string("\x10\x05\x21\x01\x02\x03\x04\x05\x06\x07\x08\x25\x01\x02\x03\x04", 16),
      // field 20 as a group holding a varint and a nested group, then revision.
      std::string("\xa3\x01\x08\x01\x13\x18\x02\x14\xa4\x01\x28\x09", 12),
      // jurisdiction (1) inside attributes as a varint, then as a string.
      std::string("\x12\x06\x08\x01\x0a\x02GB", 8),
      // An end-group tag with no group; a group closed by another field's end.
      std::string("\xa4\x01", 2),
      std::string("\xa3\x01\xac\x01", 4),
      // Wire types 6 and 7; field number 0.
      std::string("\x0e", 1),
      std::string("\x0f", 1),
      std::string("\x00\x01", 2),
      // A tag of 5 bytes beyond 32 bits (its low 32 bits count), and of 6.
      std::string("\xa8\x80\x80\x80\x70\x07", 6),
      std::string("\xa8\x80\x80\x80\x80\x00\x07", 7),
      // A varint longer than 10 bytes.
      std::string("\x28\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12),
      // A length past the end.
      std::string("\x12\x05GB", 4),
  };
  for (const std::string& bytes : cases) ExpectDecodesAsProtobuf(arena, bytes);
  const SubjectView* view = arena.Decode(cases[2]);
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->revision, 9);
}

// Random bytes: never a crash; whatever protobuf accepts decodes to the
// same fields, and whatever is rejected protobuf rejects too. (Protobuf may
// reject more: it checks strings for UTF-8.)
TEST(SubjectViewTest, RandomBytesDecodeAsProtobufParsesThem) {
  std::mt19937_64 random(3);
  SubjectViewArena arena;
  const google::protobuf::LogSilencer quiet;  // protobuf logs each bad UTF-8 string
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(std::uniform_int_distribution<size_t>(0, 24)(random), '\0');
    for (char& c : bytes) {
      // Often a tag of a field the view reads, with any wire type.
      c = static_cast<char>(std::uniform_int_distribution<int>(0, 2)(random) == 0
                                ? std::uniform_int_distribution<int>(0x08, 0x2f)(random)
                                : std::uniform_int_distribution<int>(0, 255)(random));
    }
    v1::Subject parsed;
    const SubjectView* view = arena.Decode(bytes);
    // Field 100 (kCompactNoticesField) is the subject index's own, which
    // protobuf keeps as unknown: no comparison for it.
    if (parsed.ParseFromString(bytes) &&
        !HasField(parsed.GetReflection()->GetUnknownFields(parsed), kCompactNoticesField)) {
      ++accepted;
      ASSERT_NE(view, nullptr) << absl::CEscape(bytes);
      ExpectSameFields(*view, parsed);
    }
  }
  EXPECT_GT(accepted, 1000);  // the test reaches well-formed messages
}

// The subject index's compact notices: pairs of purpose numbers and Unix
// seconds, read back as the purposes' names.
TEST(SubjectViewTest, DecodesCompactNotices) {
  const uint32_t training = PurposeNumber("ai_training");
  const uint32_t ranking = PurposeNumber("ai_training.ranking");
  ASSERT_NE(training, ranking);
  EXPECT_EQ(PurposeNumber("ai_training"), training);
  EXPECT_EQ(*PurposeName(training), "ai_training");
  EXPECT_EQ(PurposeName(ranking + 1000), std::nullopt);

  v1::Subject subject;
  subject.set_revision(7);
  std::string bytes = subject.SerializeAsString();
  // Field 100, length-delimited: (training, 1700000000), (ranking, 5).
  const std::string packed =
      absl::StrCat(std::string(1, static_cast<char>(training)), "\x80\xe2\xcf\xaa\x06",
                   std::string(1, static_cast<char>(ranking)), "\x05");
  ASSERT_LT(training, 128u);
  ASSERT_LT(ranking, 128u);
  bytes += absl::StrCat("\xa2\x06", std::string(1, static_cast<char>(packed.size())), packed);
  SubjectViewArena arena;
  const SubjectView* view = arena.Decode(bytes);
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->revision, 7);
  ASSERT_EQ(view->notices.size(), 2u);
  EXPECT_EQ(view->notices[0].purpose, "ai_training");
  EXPECT_EQ(view->notices[0].delivery_time, absl::FromUnixSeconds(1'700'000'000));
  EXPECT_EQ(view->notices[0].notice_id, "");
  EXPECT_EQ(view->notices[1].purpose, "ai_training.ranking");
  EXPECT_EQ(view->notices[1].delivery_time, absl::FromUnixSeconds(5));
  // An unknown number, or a pair cut short, does not decode.
  EXPECT_EQ(arena.Decode(absl::StrCat("\xa2\x06\x02\x7f\x01")), nullptr);
  EXPECT_EQ(arena.Decode(absl::StrCat("\xa2\x06\x01", std::string(1, static_cast<char>(training)))),
            nullptr);
}

// Views stay valid as the arena grows past its first blocks.
TEST(SubjectViewTest, ViewsOutliveLaterBlocks) {
  SubjectViewArena arena;
  std::vector<const SubjectView*> views;
  std::vector<v1::Subject> subjects;
  std::mt19937_64 random(5);
  for (int i = 0; i < 50'000; ++i) {
    subjects.push_back(RandomSubject(random));
    views.push_back(arena.Add(subjects.back()));
  }
  for (size_t i = 0; i < views.size(); ++i) ExpectSameFields(*views[i], subjects[i]);
}

}  // namespace
}  // namespace consent::storage
