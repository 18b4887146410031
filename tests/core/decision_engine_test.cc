// Table-driven tests of the decision rules: every reason, and for each pair
// of adjacent rules, which one wins when both would deny.
#include "core/decision_engine.h"

#include <optional>

#include "absl/strings/str_cat.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"

namespace consent {
namespace {

constexpr char kPolicy[] = R"pb(
  version: "engine-test"
  purposes { name: "ai_training" }
  purposes { name: "ai_training.generative" }
  purposes { name: "ai_training.research" }
  purposes { name: "analytics" }
  jurisdiction_groups {
    name: "uk"
    jurisdictions: "GB"
    rules {
      purpose_rules {
        purpose: "ai_training"
        legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST
        allowed_visibilities: VISIBILITY_PUBLIC
        sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL
        min_age: 18
        require_known_age: true
      }
    }
  }
  jurisdiction_groups {
    name: "us"
    jurisdictions: "US"
    rules {
      purpose_rules {
        purpose: "ai_training"
        legal_basis: LEGAL_BASIS_CONSENT
        allowed_visibilities: [ VISIBILITY_PUBLIC, VISIBILITY_FOLLOWERS ]
        excluded_content_types: CONTENT_TYPE_STORY
        sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_LISTED
        excluded_sensitive_categories: SENSITIVE_CATEGORY_HEALTH
        min_age: 13
      }
    }
  }
  jurisdiction_groups {
    name: "notice_period"
    jurisdictions: "FR"
    rules {
      purpose_rules {
        purpose: "ai_training"
        legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST
        allowed_visibilities: VISIBILITY_PUBLIC
        sensitive_handling: SENSITIVE_HANDLING_EXCLUDE_ALL
        min_notice_days: 28
      }
    }
  }
  jurisdiction_groups {
    name: "closed"
    jurisdictions: "CN"
    rules { purpose_rules { purpose: "ai_training" prohibited: true } }
  }
  jurisdiction_groups {
    name: "analytics_only"
    jurisdictions: "BR"
    rules {
      purpose_rules {
        purpose: "analytics"
        legal_basis: LEGAL_BASIS_LEGITIMATE_INTEREST
        allowed_visibilities: VISIBILITY_PUBLIC
        sensitive_handling: SENSITIVE_HANDLING_ALLOW
      }
    }
  }
  default_rules {
    purpose_rules {
      purpose: "ai_training"
      legal_basis: LEGAL_BASIS_CONSENT
      allowed_visibilities: VISIBILITY_PUBLIC
      sensitive_handling: SENSITIVE_HANDLING_ALLOW
    }
  }
)pb";

const absl::Time kAt =
    absl::FromCivil(absl::CivilSecond(2026, 6, 1, 12, 0, 0), absl::UTCTimeZone());

google::protobuf::Timestamp Ts(int y, int m, int d, int hh = 0, int mm = 0, int ss = 0) {
  return ToProto(absl::FromCivil(absl::CivilSecond(y, m, d, hh, mm, ss), absl::UTCTimeZone()));
}

struct Pref {
  std::string purpose;
  v1::PreferenceState state;
  std::optional<google::protobuf::Timestamp> effective;
  std::optional<google::protobuf::Timestamp> expire;
};

// A notice delivered to the subject.
struct Notice {
  std::vector<std::string> purposes;
  google::protobuf::Timestamp delivered;
};

struct Case {
  std::string name;
  // Subject; has_record false: nothing was ever recorded.
  bool has_record = true;
  std::string jurisdiction = "GB";
  std::optional<v1::Date> birth = v1::Date();  // set in Birth()
  bool deleted = false;
  v1::AccountState state = v1::ACCOUNT_STATE_ACTIVE;
  std::vector<Pref> prefs;
  std::vector<Notice> notices;
  // Purposes for which the user excluded the checked content.
  std::vector<std::string> excluded;
  // Check.
  std::string purpose = "ai_training";
  v1::ContentType type = v1::CONTENT_TYPE_POST;
  v1::Visibility visibility = v1::VISIBILITY_PUBLIC;
  std::vector<v1::SensitiveCategory> sensitive;
  std::optional<google::protobuf::Timestamp> created = Ts(2026, 1, 1);
  // Expectation.
  v1::DecisionReason want;
  int want_rule;
};

v1::Date Birth(int y, int m, int d) {
  v1::Date date;
  date.set_year(y);
  date.set_month(m);
  date.set_day(d);
  return date;
}

const v1::Date kAdult = Birth(1990, 1, 1);

// Builders that read as the table's sentences.
Case C(std::string name, v1::DecisionReason want, int rule) {
  Case c;
  c.name = std::move(name);
  c.birth = kAdult;
  c.want = want;
  c.want_rule = rule;
  return c;
}
Case& In(Case& c, std::string j) {
  c.jurisdiction = std::move(j);
  return c;
}

Pref Objected(std::string p) { return {std::move(p), v1::PREFERENCE_STATE_OBJECTED, {}, {}}; }
Pref Consented(std::string p) { return {std::move(p), v1::PREFERENCE_STATE_CONSENTED, {}, {}}; }

using R = v1::DecisionReason;
constexpr R kDefault = v1::DECISION_REASON_ALLOWED_DEFAULT;
constexpr R kConsent = v1::DECISION_REASON_ALLOWED_CONSENT;
constexpr R kDeleted = v1::DECISION_REASON_DENIED_ACCOUNT_DELETED;
constexpr R kPolicy_ = v1::DECISION_REASON_DENIED_POLICY;
constexpr R kType = v1::DECISION_REASON_DENIED_CONTENT_TYPE;
constexpr R kNotPublic = v1::DECISION_REASON_DENIED_NOT_PUBLIC;
constexpr R kSensitive = v1::DECISION_REASON_DENIED_SENSITIVE;
constexpr R kMinor = v1::DECISION_REASON_DENIED_MINOR;
constexpr R kExcluded = v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED;
constexpr R kObjection = v1::DECISION_REASON_DENIED_OBJECTION;
constexpr R kNoConsent = v1::DECISION_REASON_DENIED_NO_CONSENT;
constexpr R kNotNotified = v1::DECISION_REASON_DENIED_NOT_NOTIFIED;

std::vector<Case> Cases() {
  std::vector<Case> cases;
  auto add = [&cases](Case c) { cases.push_back(std::move(c)); };
  Case c;

  // Rule 10 and the plain cases.
  add(C("uk_adult_public_post_allowed_by_default", kDefault, 10));
  c = C("no_record_uses_default_rules_and_needs_consent", kNoConsent, 10);
  c.has_record = false;
  add(c);
  c = C("unknown_jurisdiction_needs_consent", kNoConsent, 10);
  add(In(c, "JP"));
  c = C("empty_jurisdiction_needs_consent", kNoConsent, 10);
  add(In(c, ""));
  c = C("deactivated_account_is_not_special", kDefault, 10);
  c.state = v1::ACCOUNT_STATE_DEACTIVATED;
  add(c);

  // Rule 2, and 2 before 3, 4.
  c = C("deleted_account", kDeleted, 2);
  c.deleted = true;
  add(c);
  c = C("deleted_beats_policy", kDeleted, 2);
  c.deleted = true;
  add(In(c, "CN"));
  c = C("deleted_beats_message", kDeleted, 2);
  c.deleted = true;
  c.type = v1::CONTENT_TYPE_MESSAGE;
  add(c);
  c = C("deleted_beats_consent", kDeleted, 2);
  c.deleted = true;
  c.prefs = {Consented("ai_training")};
  add(c);

  // Rule 3, and 3 before 4.
  c = C("prohibited_purpose", kPolicy_, 3);
  add(In(c, "CN"));
  c = C("no_rule_for_purpose_in_jurisdiction", kPolicy_, 3);
  add(In(c, "BR"));
  c = C("no_rule_for_purpose_in_default_rules", kPolicy_, 3);
  c.purpose = "analytics";
  add(In(c, "JP"));
  c = C("policy_beats_message", kPolicy_, 3);
  c.type = v1::CONTENT_TYPE_MESSAGE;
  add(In(c, "CN"));
  c = C("policy_beats_consent", kPolicy_, 3);
  c.prefs = {Consented("ai_training")};
  add(In(c, "CN"));
  c = C("rule_of_parent_purpose_applies_to_child", kPolicy_, 3);
  c.purpose = "ai_training.generative";
  add(In(c, "CN"));

  // Rule 4, and 4 before 5.
  c = C("private_message_never", kType, 4);
  c.type = v1::CONTENT_TYPE_MESSAGE;
  add(c);
  c = C("private_message_never_even_with_consent", kType, 4);
  c.type = v1::CONTENT_TYPE_MESSAGE;
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("type_excluded_by_rule", kType, 4);
  c.type = v1::CONTENT_TYPE_STORY;
  add(In(c, "US"));
  c = C("subdivision_falls_back_to_country_group", kType, 4);
  c.type = v1::CONTENT_TYPE_STORY;
  add(In(c, "US-CA"));
  c = C("content_type_beats_visibility", kType, 4);
  c.type = v1::CONTENT_TYPE_MESSAGE;
  c.visibility = v1::VISIBILITY_PRIVATE;
  add(c);

  // Rule 5, and 5 before 6.
  c = C("friends_only_post", kNotPublic, 5);
  c.visibility = v1::VISIBILITY_FRIENDS;
  add(c);
  c = C("followers_allowed_where_rule_allows", kConsent, 9);
  c.visibility = v1::VISIBILITY_FOLLOWERS;
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("followers_not_allowed_in_uk", kNotPublic, 5);
  c.visibility = v1::VISIBILITY_FOLLOWERS;
  add(c);
  c = C("visibility_beats_sensitive", kNotPublic, 5);
  c.visibility = v1::VISIBILITY_FRIENDS;
  c.sensitive = {v1::SENSITIVE_CATEGORY_HEALTH};
  add(c);
  c = C("visibility_beats_consent", kNotPublic, 5);
  c.visibility = v1::VISIBILITY_FRIENDS;
  c.prefs = {Consented("ai_training")};
  add(In(c, "JP"));

  // Rule 6, and 6 before 7.
  c = C("sensitive_excluded_all", kSensitive, 6);
  c.sensitive = {v1::SENSITIVE_CATEGORY_RELIGIOUS_OR_PHILOSOPHICAL_BELIEFS};
  add(c);
  c = C("sensitive_listed_category", kSensitive, 6);
  c.sensitive = {v1::SENSITIVE_CATEGORY_POLITICAL_OPINIONS, v1::SENSITIVE_CATEGORY_HEALTH};
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("sensitive_unlisted_category_passes", kConsent, 9);
  c.sensitive = {v1::SENSITIVE_CATEGORY_POLITICAL_OPINIONS};
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("sensitive_allowed_by_rule", kConsent, 9);
  c.sensitive = {v1::SENSITIVE_CATEGORY_HEALTH};
  c.prefs = {Consented("ai_training")};
  add(In(c, "JP"));
  c = C("sensitive_beats_minor", kSensitive, 6);
  c.sensitive = {v1::SENSITIVE_CATEGORY_HEALTH};
  c.birth = Birth(2012, 1, 1);
  add(c);

  // Rule 7, and 7 before 8/9.
  c = C("minor_at_creation", kMinor, 7);
  c.birth = Birth(2009, 6, 1);
  add(c);
  c = C("posted_at_17_now_30", kMinor, 7);
  c.birth = Birth(1996, 6, 1);
  c.created = Ts(2013, 6, 1);
  add(c);
  c = C("eighteenth_birthday_is_adult", kDefault, 10);
  c.birth = Birth(2008, 1, 1);
  c.created = Ts(2026, 1, 1);
  add(c);
  c = C("last_second_before_eighteenth_birthday", kMinor, 7);
  c.birth = Birth(2008, 1, 1);
  c.created = Ts(2025, 12, 31, 23, 59, 59);
  add(c);
  c = C("unknown_birth_date_where_required", kMinor, 7);
  c.birth.reset();
  add(c);
  c = C("unknown_birth_date_where_not_required", kConsent, 9);
  c.birth.reset();
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("no_record_needs_consent_without_age_rule", kNoConsent, 10);
  c.has_record = false;
  add(In(c, "US"));
  c = C("no_create_time_where_age_required", kMinor, 7);
  c.created.reset();
  add(c);
  c = C("no_create_time_and_minor_now", kMinor, 7);
  c.created.reset();
  c.birth = Birth(2014, 1, 1);
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("no_create_time_adult_where_age_not_required", kConsent, 9);
  c.created.reset();
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));
  c = C("create_time_after_evaluation_time_counts_as_evaluation_time", kMinor, 7);
  c.birth = Birth(2008, 6, 2);       // 18 the day after kAt
  c.created = Ts(2026, 6, 2, 0, 1);  // after kAt: the age at kAt counts
  add(c);
  c = C("minor_beats_objection", kMinor, 7);
  c.birth = Birth(2010, 1, 1);
  c.prefs = {Objected("ai_training")};
  add(c);
  c = C("minor_beats_consent", kMinor, 7);
  c.birth = Birth(2015, 1, 1);
  c.prefs = {Consented("ai_training")};
  add(In(c, "US"));

  // Rule 8, and 7 before 8, 8 before 9.
  c = C("excluded_content_item", kExcluded, 8);
  c.excluded = {"ai_training"};
  add(c);
  c = C("exclusion_of_parent_purpose_covers_child", kExcluded, 8);
  c.excluded = {"ai_training"};
  c.purpose = "ai_training.generative";
  add(c);
  c = C("exclusion_of_child_does_not_cover_parent", kDefault, 10);
  c.excluded = {"ai_training.generative"};
  add(c);
  c = C("exclusion_of_sibling_does_not_apply", kDefault, 10);
  c.excluded = {"ai_training.generative"};
  c.purpose = "ai_training.research";
  add(c);
  c = C("exclusion_matches_whole_segments_only", kDefault, 10);
  c.excluded = {"ai_train"};
  add(c);
  c = C("minor_beats_exclusion", kMinor, 7);
  c.birth = Birth(2012, 1, 1);
  c.excluded = {"ai_training"};
  add(c);
  c = C("sensitive_beats_exclusion", kSensitive, 6);
  c.sensitive = {v1::SENSITIVE_CATEGORY_BIOMETRIC};
  c.excluded = {"ai_training"};
  add(c);
  c = C("exclusion_beats_consent", kExcluded, 8);
  c.excluded = {"ai_training.generative"};
  c.prefs = {Consented("ai_training.generative")};
  c.purpose = "ai_training.generative";
  add(In(c, "JP"));
  c = C("exclusion_beats_objection", kExcluded, 8);
  c.excluded = {"ai_training"};
  c.prefs = {Objected("ai_training")};
  add(c);
  c = C("deleted_beats_exclusion", kDeleted, 2);
  c.deleted = true;
  c.excluded = {"ai_training"};
  add(c);

  // Rule 9: preferences, the purpose path and time.
  c = C("objection", kObjection, 9);
  c.prefs = {Objected("ai_training")};
  add(c);
  c = C("objection_to_parent_covers_child", kObjection, 9);
  c.prefs = {Objected("ai_training")};
  c.purpose = "ai_training.generative";
  add(c);
  c = C("objection_to_child_does_not_cover_parent", kDefault, 10);
  c.prefs = {Objected("ai_training.generative")};
  add(c);
  c = C("objection_to_sibling_does_not_apply", kDefault, 10);
  c.prefs = {Objected("ai_training.generative")};
  c.purpose = "ai_training.research";
  add(c);
  c = C("specific_consent_beats_general_objection", kConsent, 9);
  c.prefs = {Objected("ai_training"), Consented("ai_training.research")};
  c.purpose = "ai_training.research";
  add(c);
  c = C("general_objection_still_covers_other_children", kObjection, 9);
  c.prefs = {Objected("ai_training"), Consented("ai_training.research")};
  c.purpose = "ai_training.generative";
  add(c);
  c = C("specific_objection_beats_general_consent", kObjection, 9);
  c.prefs = {Consented("ai_training"), Objected("ai_training.generative")};
  c.purpose = "ai_training.generative";
  add(In(c, "US"));
  c = C("consent_beats_legal_basis_default", kConsent, 9);
  c.prefs = {Consented("ai_training")};
  add(c);
  c = C("consent_where_consent_is_needed", kConsent, 9);
  c.prefs = {Consented("ai_training")};
  add(In(c, "JP"));
  c = C("objection_where_consent_is_needed", kObjection, 9);
  c.prefs = {Objected("ai_training")};
  add(In(c, "JP"));
  c = C("expired_objection_no_longer_applies", kDefault, 10);
  c.prefs = {{"ai_training", v1::PREFERENCE_STATE_OBJECTED, {}, Ts(2026, 5, 1)}};
  add(c);
  c = C("future_objection_not_yet_in_effect", kDefault, 10);
  c.prefs = {{"ai_training", v1::PREFERENCE_STATE_OBJECTED, Ts(2026, 7, 1), {}}};
  add(c);
  c = C("objection_effective_exactly_now", kObjection, 9);
  c.prefs = {{"ai_training", v1::PREFERENCE_STATE_OBJECTED, Ts(2026, 6, 1, 12), {}}};
  add(c);
  c = C("objection_expiring_exactly_now", kDefault, 10);
  c.prefs = {{"ai_training", v1::PREFERENCE_STATE_OBJECTED, {}, Ts(2026, 6, 1, 12)}};
  add(c);
  c = C("expired_specific_falls_back_to_general", kObjection, 9);
  c.prefs = {Objected("ai_training"),
             {"ai_training.research", v1::PREFERENCE_STATE_CONSENTED, {}, Ts(2026, 1, 1)}};
  c.purpose = "ai_training.research";
  add(c);
  // Recorded later (a higher revision: the prefs are recorded in list
  // order) on an ancestor, an objection overrides a consent on a descendant;
  // a later consent on an ancestor never overrides a descendant's objection.
  c = C("later_general_objection_overrides_earlier_specific_consent", kObjection, 9);
  c.prefs = {Consented("ai_training.research"), Objected("ai_training")};
  c.purpose = "ai_training.research";
  add(In(c, "JP"));
  c = C("later_general_objection_overrides_earlier_specific_consent_uk", kObjection, 9);
  c.prefs = {Consented("ai_training.research"), Objected("ai_training")};
  c.purpose = "ai_training.research";
  add(c);
  c = C("later_general_consent_never_overrides_specific_objection", kObjection, 9);
  c.prefs = {Objected("ai_training.generative"), Consented("ai_training")};
  c.purpose = "ai_training.generative";
  add(In(c, "US"));
  c = C("later_general_objection_not_in_effect_leaves_consent", kConsent, 9);
  c.prefs = {Consented("ai_training.research"),
             {"ai_training", v1::PREFERENCE_STATE_OBJECTED, {}, Ts(2026, 5, 1)}};
  c.purpose = "ai_training.research";
  add(In(c, "JP"));
  c = C("later_general_objection_not_yet_in_effect_leaves_consent", kConsent, 9);
  c.prefs = {Consented("ai_training.research"),
             {"ai_training", v1::PREFERENCE_STATE_OBJECTED, Ts(2026, 7, 1), {}}};
  c.purpose = "ai_training.research";
  add(In(c, "JP"));
  c = C("later_sibling_objection_does_not_override_consent", kConsent, 9);
  c.prefs = {Consented("ai_training.research"), Objected("ai_training.generative")};
  c.purpose = "ai_training.research";
  add(In(c, "JP"));
  c = C("objection_covers_old_content", kObjection, 9);
  c.prefs = {Objected("ai_training")};
  c.created = Ts(2012, 3, 4);
  add(c);

  // Rule 10 with a notice period of 28 days (FR); kAt is 2026-06-01 12:00,
  // so a notice counts if delivered by 2026-05-04 12:00.
  c = C("notice_period_no_notice_denies", kNotNotified, 10);
  add(In(c, "FR"));
  c = C("notice_period_delivered_on_the_last_day_counts", kDefault, 10);
  c.notices = {{{"ai_training"}, Ts(2026, 5, 4, 12)}};
  add(In(c, "FR"));
  c = C("notice_period_one_second_short_denies", kNotNotified, 10);
  c.notices = {{{"ai_training"}, Ts(2026, 5, 4, 12, 0, 1)}};
  add(In(c, "FR"));
  c = C("notice_period_delivered_the_day_after_denies", kNotNotified, 10);
  c.notices = {{{"ai_training"}, Ts(2026, 5, 5, 12)}};
  add(In(c, "FR"));
  c = C("notice_period_long_ended_allows", kDefault, 10);
  c.notices = {{{"ai_training"}, Ts(2025, 1, 1)}};
  add(In(c, "FR"));
  c = C("notice_delivered_after_the_evaluation_time_denies", kNotNotified, 10);
  c.notices = {{{"ai_training"}, Ts(2026, 6, 2)}};
  add(In(c, "FR"));
  c = C("notice_for_the_parent_purpose_counts", kDefault, 10);
  c.notices = {{{"ai_training"}, Ts(2026, 4, 1)}};
  c.purpose = "ai_training.generative";
  add(In(c, "FR"));
  c = C("notice_for_a_sibling_purpose_does_not_count", kNotNotified, 10);
  c.notices = {{{"ai_training.research"}, Ts(2026, 4, 1)}};
  c.purpose = "ai_training.generative";
  add(In(c, "FR"));
  c = C("notice_for_a_child_purpose_does_not_cover_the_parent", kNotNotified, 10);
  c.notices = {{{"ai_training.generative"}, Ts(2026, 4, 1)}};
  add(In(c, "FR"));
  c = C("notice_for_another_purpose_among_several_counts", kDefault, 10);
  c.notices = {{{"analytics", "ai_training"}, Ts(2026, 4, 1)}};
  add(In(c, "FR"));
  c = C("notice_the_earliest_of_several_counts", kDefault, 10);
  c.notices = {{{"ai_training"}, Ts(2026, 5, 30)}, {{"ai_training"}, Ts(2026, 3, 1)}};
  add(In(c, "FR"));
  c = C("notice_period_objection_decides_first", kObjection, 9);
  c.prefs = {Objected("ai_training")};
  c.notices = {{{"ai_training"}, Ts(2026, 1, 1)}};
  add(In(c, "FR"));
  c = C("notice_period_consent_decides_first", kConsent, 9);
  c.prefs = {Consented("ai_training")};
  add(In(c, "FR"));
  c = C("notice_period_content_rules_decide_first", kNotPublic, 5);
  c.visibility = v1::VISIBILITY_FRIENDS;
  add(In(c, "FR"));
  c = C("no_notice_period_needs_no_notice", kDefault, 10);
  c.notices = {};
  add(c);  // GB: min_notice_days 0
  return cases;
}

class DecisionTableTest : public ::testing::TestWithParam<Case> {
 protected:
  static void SetUpTestSuite() {
    auto compiled = CompiledPolicy::FromText(kPolicy, "engine-test");
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    policy_ = new std::shared_ptr<const CompiledPolicy>(*compiled);
  }
  static std::shared_ptr<const CompiledPolicy>* policy_;
};
std::shared_ptr<const CompiledPolicy>* DecisionTableTest::policy_ = nullptr;

TEST_P(DecisionTableTest, Decides) {
  const Case& c = GetParam();
  v1::Subject subject;
  subject.set_user_id("u");
  subject.mutable_attributes()->set_jurisdiction(c.jurisdiction);
  subject.mutable_attributes()->set_account_state(c.deleted ? v1::ACCOUNT_STATE_DELETED : c.state);
  if (c.birth) *subject.mutable_attributes()->mutable_birth_date() = *c.birth;
  int64_t revision = 0;
  for (const Pref& p : c.prefs) {
    v1::Preference* pref = subject.add_preferences();
    pref->set_revision(++revision);  // recorded in the table's order
    pref->set_purpose(p.purpose);
    pref->set_state(p.state);
    if (p.effective) *pref->mutable_effective_time() = *p.effective;
    if (p.expire) *pref->mutable_expire_time() = *p.expire;
  }
  for (const Notice& n : c.notices) {
    v1::NoticeDelivery* notice = subject.add_notices();
    notice->set_notice_id(absl::StrCat("notice-", subject.notices_size()));
    notice->set_notice_version("1");
    for (const std::string& p : n.purposes) notice->add_purposes(p);
    notice->set_channel(v1::NOTICE_CHANNEL_EMAIL);
    *notice->mutable_delivery_time() = n.delivered;
    notice->set_revision(++revision);
  }
  v1::Content content;
  content.set_content_id("c1");
  content.set_content_type(c.type);
  content.set_visibility(c.visibility);
  for (auto s : c.sensitive) content.add_sensitive_categories(s);
  if (c.created) *content.mutable_create_time() = *c.created;

  // The record as the store gives it: decoded from its bytes.
  SubjectViewArena arena;
  const Verdict verdict =
      Decide(**policy_, CheckSubject{c.has_record ? arena.Add(subject) : nullptr, c.excluded},
             c.purpose, content, kAt);
  EXPECT_EQ(v1::DecisionReason_Name(verdict.reason), v1::DecisionReason_Name(c.want));
  EXPECT_EQ(verdict.rule, c.want_rule);
}

INSTANTIATE_TEST_SUITE_P(Rules, DecisionTableTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return param.param.name;
                         });

TEST(DecisionEngineTest, EveryReasonIsCoveredByTheTable) {
  std::set<int> seen;
  for (const Case& c : Cases()) seen.insert(c.want);
  for (int r = 1; r <= v1::DecisionReason_MAX; ++r) {
    EXPECT_TRUE(seen.count(r)) << v1::DecisionReason_Name(static_cast<R>(r));
  }
  EXPECT_GE(Cases().size(), 60u);
}

TEST(DecisionEngineTest, ExplanationEndsWithTheDecidingRule) {
  auto compiled = CompiledPolicy::FromText(kPolicy, "engine-test");
  ASSERT_TRUE(compiled.ok());
  v1::Subject subject;
  subject.mutable_attributes()->set_jurisdiction("GB");
  *subject.mutable_attributes()->mutable_birth_date() = kAdult;
  v1::Content content;
  content.set_content_id("c1");
  content.set_content_type(v1::CONTENT_TYPE_POST);
  content.set_visibility(v1::VISIBILITY_FRIENDS);
  std::vector<v1::RuleEvaluation> explanation;
  SubjectViewArena arena;
  const Verdict verdict = Decide(**compiled, CheckSubject{arena.Add(subject), {}}, "ai_training",
                                 content, kAt, &explanation);
  EXPECT_EQ(verdict.reason, kNotPublic);
  ASSERT_EQ(explanation.size(), 5u);
  EXPECT_EQ(explanation[4].rule(), 5);
  EXPECT_EQ(explanation[4].outcome(), v1::RULE_OUTCOME_DECIDED);
  EXPECT_EQ(explanation[4].detail(), "FRIENDS is not allowed by the rule");
  EXPECT_EQ(explanation[3].detail(), "POST is not excluded");
  EXPECT_EQ(explanation[1].detail(), "account not deleted");
}

TEST(DecisionEngineTest, ExplanationOfTheNoticePeriodNamesTheNoticeAndItsEnd) {
  auto compiled = CompiledPolicy::FromText(kPolicy, "engine-test");
  ASSERT_TRUE(compiled.ok());
  v1::Subject subject;
  subject.mutable_attributes()->set_jurisdiction("FR");
  v1::NoticeDelivery* notice = subject.add_notices();
  notice->set_notice_id("ai-notice");
  notice->set_notice_version("2026-05");
  notice->add_purposes("ai_training");
  *notice->mutable_delivery_time() = Ts(2026, 5, 20, 9);
  v1::Content content;
  content.set_content_id("c1");
  content.set_content_type(v1::CONTENT_TYPE_POST);
  content.set_visibility(v1::VISIBILITY_PUBLIC);
  SubjectViewArena arena;
  std::vector<v1::RuleEvaluation> explanation;
  Verdict verdict = Decide(**compiled, CheckSubject{arena.Add(subject), {}},
                           "ai_training.generative", content, kAt, &explanation);
  EXPECT_EQ(verdict.reason, kNotNotified);
  ASSERT_EQ(explanation.size(), 10u);
  EXPECT_EQ(explanation[9].detail(),
            "legitimate interest with a notice period of 28 days: notice ai-notice version "
            "2026-05 for ai_training delivered at 2026-05-20T09:00:00Z, period ends at "
            "2026-06-17T09:00:00Z");
  explanation.clear();
  verdict = Decide(**compiled, CheckSubject{arena.Add(subject), {}}, "ai_training", content,
                   FromProto(Ts(2026, 6, 17, 9)), &explanation);
  EXPECT_EQ(verdict.reason, kDefault);
  EXPECT_EQ(explanation.back().detail(),
            "legitimate interest with a notice period of 28 days: notice ai-notice version "
            "2026-05 for ai_training delivered at 2026-05-20T09:00:00Z, period ended at "
            "2026-06-17T09:00:00Z");
  subject.clear_notices();
  explanation.clear();
  verdict = Decide(**compiled, CheckSubject{arena.Add(subject), {}}, "ai_training", content, kAt,
                   &explanation);
  EXPECT_EQ(verdict.reason, kNotNotified);
  EXPECT_EQ(explanation.back().detail(),
            "legitimate interest with a notice period of 28 days: no notice covering ai_training "
            "was delivered");
}

TEST(DecisionEngineTest, CoversPurpose) {
  EXPECT_TRUE(CoversPurpose("a", "a"));
  EXPECT_TRUE(CoversPurpose("a", "a.b.c"));
  EXPECT_FALSE(CoversPurpose("a.b", "a"));
  EXPECT_FALSE(CoversPurpose("a", "ab"));
}

TEST(DecisionEngineTest, AgeInYears) {
  const DateView birth{2000, 2, 29};
  auto at = [](int y, int m, int d) {
    return absl::FromCivil(absl::CivilDay(y, m, d), absl::UTCTimeZone());
  };
  EXPECT_EQ(AgeInYears(birth, at(2018, 2, 28)), 17);
  EXPECT_EQ(AgeInYears(birth, at(2018, 3, 1)), 18);
  EXPECT_EQ(AgeInYears(birth, at(2020, 2, 29)), 20);
  EXPECT_EQ(AgeInYears(birth, at(1999, 1, 1)), -2);
}

// UtcDate agrees with absl's civil-time conversion: every day from year -1
// to 2400 (leap years, centuries, the 400-year cycle, times before 1970)
// at its first and last second and at a time within it, and far-off times.
TEST(DecisionEngineTest, UtcDateAgreesWithAbsl) {
  auto expect_same = [](absl::Time t) {
    const absl::CivilDay want = absl::ToCivilDay(t, absl::UTCTimeZone());
    const CivilDate got = UtcDate(t);
    ASSERT_EQ(got.year, want.year()) << t;
    ASSERT_EQ(got.month, want.month()) << t;
    ASSERT_EQ(got.day, want.day()) << t;
  };
  const absl::Time start = absl::FromCivil(absl::CivilDay(-1, 1, 1), absl::UTCTimeZone());
  const absl::Time end = absl::FromCivil(absl::CivilDay(2400, 12, 31), absl::UTCTimeZone());
  int64_t days = 0;
  for (absl::Time t = start; t <= end; t += absl::Hours(24), ++days) {
    expect_same(t);
    expect_same(t + absl::Seconds(86'399));
    expect_same(t + absl::Seconds(days * 7'919 % 86'400) + absl::Milliseconds(500));
  }
  EXPECT_EQ(days, 877'313);  // the days of years -1 to 2400
  expect_same(absl::FromUnixSeconds(-1));
  expect_same(absl::FromUnixSeconds(0));
  expect_same(absl::FromUnixSeconds(int64_t{300'000} * 366 * 86'400));
  expect_same(absl::FromUnixSeconds(-int64_t{300'000} * 366 * 86'400));
  expect_same(absl::InfinitePast());
  expect_same(absl::InfiniteFuture());
}

TEST(DecisionEngineTest, IsAllowedOnlyForAllowedReasons) {
  EXPECT_TRUE(IsAllowed(kDefault));
  EXPECT_TRUE(IsAllowed(kConsent));
  EXPECT_FALSE(IsAllowed(kObjection));
  EXPECT_FALSE(IsAllowed(v1::DECISION_REASON_UNSPECIFIED));
}

}  // namespace
}  // namespace consent
