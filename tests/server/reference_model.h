// A reference model of the decision rules (docs/decisions.md, default
// policy), written apart from the server's code, and a randomized test
// that drives real servers and the model alike and compares their
// decisions: shared by the standalone test (decisions_test.cc) and the
// replicated one (replicated_decisions_test.cc).
#ifndef CONSENT_TESTS_SERVER_REFERENCE_MODEL_H_
#define CONSENT_TESTS_SERVER_REFERENCE_MODEL_H_

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "absl/time/time.h"
#include "client/consent_client.h"
#include "core/proto_time.h"
#include "gtest/gtest.h"
#include "tests/fake_clock.h"

namespace consent::testing {

// Randomized model test: random writes and clock moves against the real
// server, and against a small reference model written here from the rules
// of docs/decisions.md (default policy). Decisions must agree, now and as
// of random past times.

struct ModelPref {
  v1::PreferenceState state;
  std::optional<absl::Time> effective, expire;
  int64_t order = 0;  // when it was recorded, relative to the others
};

struct ModelSubject {
  bool exists = false;
  bool deleted = false;
  std::string jurisdiction;
  std::optional<absl::CivilDay> birth;
  std::map<std::string, ModelPref> prefs;                  // purpose -> preference
  std::set<std::pair<std::string, std::string>> excluded;  // (content, purpose)
};

class Model {
 public:
  // State of `user` at time `t`: the last snapshot taken at or before it.
  const ModelSubject* At(const std::string& user, absl::Time t) const {
    auto it = timeline_.find(user);
    if (it == timeline_.end()) return nullptr;
    const ModelSubject* found = nullptr;
    for (const auto& [time, state] : it->second) {
      if (time <= t) found = &state;
    }
    return found;
  }
  ModelSubject Current(const std::string& user) const {
    const ModelSubject* s = At(user, absl::InfiniteFuture());
    return s ? *s : ModelSubject();
  }
  void Record(const std::string& user, absl::Time t, ModelSubject state) {
    state.exists = true;
    timeline_[user].emplace_back(t, std::move(state));
  }

  static v1::DecisionReason Decide(const ModelSubject* s, const std::string& purpose,
                                   const v1::Content& c, absl::Time at) {
    if (s && s->deleted) return v1::DECISION_REASON_DENIED_ACCOUNT_DELETED;
    static const std::set<std::string> kLegitimateInterest = {
        "GB", "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR",
        "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU", "MT", "NL", "PL",
        "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"};
    const std::string j = s ? s->jurisdiction : "";
    const bool li = kLegitimateInterest.count(j) || kLegitimateInterest.count(j.substr(0, 2));
    if (c.content_type() == v1::CONTENT_TYPE_MESSAGE)
      return v1::DECISION_REASON_DENIED_CONTENT_TYPE;
    if (c.visibility() != v1::VISIBILITY_PUBLIC) return v1::DECISION_REASON_DENIED_NOT_PUBLIC;
    if (c.sensitive_categories_size() > 0) return v1::DECISION_REASON_DENIED_SENSITIVE;
    if (!s || !s->birth) return v1::DECISION_REASON_DENIED_MINOR;
    const absl::CivilDay made =
        absl::ToCivilDay(absl::FromUnixSeconds(c.create_time().seconds()), absl::UTCTimeZone());
    const absl::CivilDay adult(s->birth->year() + 18, s->birth->month(), s->birth->day());
    // A 29 February birthday: adulthood starts on 1 March (CivilDay
    // normalises), which is what whole-year age arithmetic gives too.
    if (made < adult) return v1::DECISION_REASON_DENIED_MINOR;
    for (const auto& [content, p] : s->excluded) {
      if (content == c.content_id() && (purpose == p || purpose.rfind(p + ".", 0) == 0)) {
        return v1::DECISION_REASON_DENIED_CONTENT_EXCLUDED;
      }
    }
    // The purpose and its ancestors, most specific first.
    std::vector<const ModelPref*> path;
    for (std::string p = purpose; !p.empty();
         p = p.find('.') == std::string::npos ? "" : p.substr(0, p.rfind('.'))) {
      auto it = s->prefs.find(p);
      const ModelPref* pref = it == s->prefs.end() ? nullptr : &it->second;
      if (pref && pref->effective && at < *pref->effective) pref = nullptr;
      if (pref && pref->expire && at >= *pref->expire) pref = nullptr;
      path.push_back(pref);
    }
    for (size_t i = 0; i < path.size(); ++i) {
      if (path[i] == nullptr) continue;
      if (path[i]->state == v1::PREFERENCE_STATE_OBJECTED) {
        return v1::DECISION_REASON_DENIED_OBJECTION;
      }
      // A consent stands unless an ancestor's objection was recorded later.
      for (size_t k = i + 1; k < path.size(); ++k) {
        if (path[k] != nullptr && path[k]->state == v1::PREFERENCE_STATE_OBJECTED &&
            path[k]->order > path[i]->order) {
          return v1::DECISION_REASON_DENIED_OBJECTION;
        }
      }
      return v1::DECISION_REASON_ALLOWED_CONSENT;
    }
    return li ? v1::DECISION_REASON_ALLOWED_DEFAULT : v1::DECISION_REASON_DENIED_NO_CONSENT;
  }

 private:
  std::map<std::string, std::vector<std::pair<absl::Time, ModelSubject>>> timeline_;
};

// Runs `operations` random writes and clock moves against the reference
// model, each write through one of `clients` picked at random; every 500
// operations compares every decision, now and as of three random past
// times, through each client in turn, at least at the revision of the
// last write (min_revision: with replicas, the reader waits to have
// applied it). `clock` is the servers' clock; time starts at `start`.
inline void RunAgainstReferenceModel(FakeClock& clock, absl::Time start,
                                     const std::vector<Client*>& clients, int operations,
                                     uint32_t seed) {
  const int kOperations = operations;
  constexpr int kUsers = 80;
  constexpr int kCheckEvery = 500;
  const std::vector<std::string> purposes = {"ai_training", "ai_training.generative",
                                             "ai_training.ranking", "ai_training.safety"};
  const std::vector<std::string> contents = {"c0", "c1", "c2", "c3", "c4"};
  const std::vector<std::string> jurisdictions = {"GB", "FR", "DE", "US", "US-CA", "JP", "NO", ""};
  std::mt19937 random(seed);
  auto pick = [&](const auto& v) { return v[random() % v.size()]; };
  auto chance = [&](double p) { return std::uniform_real_distribution<>(0, 1)(random) < p; };
  auto user = [&] { return absl::StrCat("user-", random() % kUsers); };
  auto offset = [&](int64_t max_hours) {
    return absl::Minutes(static_cast<int64_t>(random() % (max_hours * 60)));
  };

  Model model;
  int writes = 0, clock_moves = 0, rejected = 0, compared = 0, rounds = 0;
  int64_t last_revision = 0;
  auto writer = [&]() -> Client& { return *clients[random() % clients.size()]; };
  auto compare_all = [&](std::optional<absl::Time> as_of) {
    Client& reader = *clients[rounds++ % clients.size()];
    const absl::Time at = as_of.value_or(clock.Now());
    for (const std::string& purpose : purposes) {
      v1::BatchCheckRequest batch;
      batch.set_purpose(purpose);
      if (as_of) *batch.mutable_as_of() = ToProto(*as_of);
      batch.set_min_revision(last_revision);
      std::vector<v1::DecisionReason> expected;
      for (int u = 0; u < kUsers; ++u) {
        for (const std::string& content_id : contents) {
          v1::CheckItem* item = batch.add_items();
          item->set_user_id(absl::StrCat("user-", u));
          v1::Content* c = item->mutable_content();
          c->set_content_id(content_id);
          c->set_content_type(chance(0.05) ? v1::CONTENT_TYPE_MESSAGE : v1::CONTENT_TYPE_POST);
          c->set_visibility(chance(0.05) ? v1::VISIBILITY_FRIENDS : v1::VISIBILITY_PUBLIC);
          if (chance(0.03)) c->add_sensitive_categories(v1::SENSITIVE_CATEGORY_HEALTH);
          *c->mutable_create_time() = ToProto(absl::FromCivil(
              absl::CivilDay(2000 + random() % 26, 1 + random() % 12, 1 + random() % 28),
              absl::UTCTimeZone()));
          expected.push_back(Model::Decide(model.At(item->user_id(), at), purpose, *c, at));
        }
      }
      auto response = reader.BatchCheck(batch);
      ASSERT_TRUE(response.ok()) << response.status();
      ASSERT_EQ(response->decisions_size(), static_cast<int>(expected.size()));
      for (size_t i = 0; i < expected.size(); ++i) {
        ASSERT_EQ(v1::DecisionReason_Name(response->decisions(static_cast<int>(i)).reason()),
                  v1::DecisionReason_Name(expected[i]))
            << "item " << i << " (" << batch.items(static_cast<int>(i)).user_id() << ", "
            << batch.items(static_cast<int>(i)).content().content_id() << ") purpose " << purpose
            << (as_of ? " as of " + absl::FormatTime(*as_of) : " now") << " after " << writes
            << " writes";
        ++compared;
      }
    }
  };

  for (int op = 1; op <= kOperations; ++op) {
    const double kind = std::uniform_real_distribution<>(0, 1)(random);
    const absl::Time now = clock.Now();
    const std::string u = user();
    ModelSubject next = model.Current(u);
    absl::Status status;
    if (kind < 0.20) {
      clock.Advance(absl::Minutes(1) + offset(48));
      ++clock_moves;
    } else if (kind < 0.60) {
      v1::SetPreferenceRequest r;
      r.set_user_id(u);
      r.set_purpose(pick(purposes));
      const int state = 1 + static_cast<int>(random() % 3);
      r.set_state(static_cast<v1::PreferenceState>(state));
      ModelPref pref{r.state(), std::nullopt, std::nullopt, op};
      if (r.state() != v1::PREFERENCE_STATE_CLEARED) {
        if (chance(0.3)) pref.effective = now - absl::Hours(120) + offset(240);
        if (chance(0.3)) pref.expire = pref.effective.value_or(now) + absl::Hours(1) + offset(240);
        if (pref.effective) *r.mutable_effective_time() = ToProto(*pref.effective);
        if (pref.expire) *r.mutable_expire_time() = ToProto(*pref.expire);
      }
      auto response = writer().SetPreference(r);
      status = response.status();
      if (response.ok()) last_revision = std::max(last_revision, response->revision());
      if (r.state() == v1::PREFERENCE_STATE_CLEARED) {
        next.prefs.erase(r.purpose());
      } else {
        next.prefs[r.purpose()] = pref;
      }
    } else if (kind < 0.80) {
      v1::UpdateSubjectRequest r;
      r.set_user_id(u);
      if (chance(0.7)) {
        r.mutable_attributes()->set_jurisdiction(pick(jurisdictions));
        r.mutable_update_mask()->add_paths("jurisdiction");
        next.jurisdiction = r.attributes().jurisdiction();
      }
      if (r.update_mask().paths_size() == 0 || chance(0.6)) {
        r.mutable_update_mask()->add_paths("birth_date");
        if (chance(0.9)) {
          const absl::CivilDay birth(1985 + random() % 30, 1 + random() % 12, 1 + random() % 28);
          auto* b = r.mutable_attributes()->mutable_birth_date();
          b->set_year(static_cast<int32_t>(birth.year()));
          b->set_month(birth.month());
          b->set_day(birth.day());
          next.birth = birth;
        } else {
          next.birth.reset();
        }
      }
      auto response = writer().UpdateSubject(r);
      status = response.status();
      if (response.ok()) last_revision = std::max(last_revision, response->revision());
    } else if (kind < 0.999) {
      v1::SetContentExclusionRequest r;
      r.set_user_id(u);
      r.set_content_id(pick(contents));
      r.set_purpose(pick(purposes));
      r.set_excluded(chance(0.6));
      auto response = writer().SetContentExclusion(r);
      status = response.status();
      if (response.ok()) last_revision = std::max(last_revision, response->revision());
      const auto key = std::make_pair(r.content_id(), r.purpose());
      if (r.excluded()) {
        next.excluded.insert(key);
      } else {
        next.excluded.erase(key);
      }
    } else {
      v1::DeleteSubjectRequest r;
      r.set_user_id(u);
      auto response = writer().DeleteSubject(r);
      status = response.status();
      if (response.ok()) last_revision = std::max(last_revision, response->revision());
      next = ModelSubject();
      next.deleted = true;
    }
    if (kind >= 0.20) {
      ++writes;
      if (model.Current(u).deleted) {
        // A deleted subject takes no more writes.
        ASSERT_TRUE(absl::IsFailedPrecondition(status) || absl::IsAlreadyExists(status)) << status;
        ++rejected;
      } else {
        ASSERT_TRUE(status.ok()) << status << " at operation " << op;
        model.Record(u, now, std::move(next));
      }
    }
    if (op % kCheckEvery == 0) {
      compare_all(std::nullopt);
      for (int k = 0; k < 3; ++k) {
        const absl::Duration span = clock.Now() - start;
        compare_all(start + absl::Seconds(static_cast<int64_t>(
                                random() % std::max<int64_t>(1, absl::ToInt64Seconds(span)))));
      }
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
  EXPECT_EQ(writes + clock_moves, kOperations);
  // Every round compares each (user, content) pair for every purpose, now
  // and at three past times.
  EXPECT_EQ(compared, (kOperations / kCheckEvery) * 4 * static_cast<int>(purposes.size()) * kUsers *
                          static_cast<int>(contents.size()));
  ::testing::Test::RecordProperty("writes", writes);
  ::testing::Test::RecordProperty("decisions_compared", compared);
  std::cout << "model test: " << writes << " writes (" << rejected << " rejected after deletion), "
            << clock_moves << " clock moves, " << compared << " decisions compared\n";
}

}  // namespace consent::testing

#endif  // CONSENT_TESTS_SERVER_REFERENCE_MODEL_H_
