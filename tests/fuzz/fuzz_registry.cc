#include "tests/fuzz/fuzz_registry.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "core/policy.h"
#include "storage/consent_store.h"
#include "tests/fake_clock.h"

namespace consent::fuzzing {
namespace {

struct Fixture {
  std::string dir;
  FakeClock clock{absl::FromCivil(absl::CivilSecond(2026, 6, 1, 0, 0, 0), absl::UTCTimeZone())};
  std::unique_ptr<storage::ConsentStore> store;
  PolicyHolder policies;
  std::unique_ptr<Registry> registry;
  CallContext caller{"fuzz"};

  Fixture() {
    char path[] = "/tmp/consent-fuzz-XXXXXX";
    if (mkdtemp(path) == nullptr) std::abort();
    dir = path;
    storage::StoreOptions options;
    options.data_dir = dir + "/data";
    options.subject_index = true;
    auto opened = storage::ConsentStore::Open(options);
    if (!opened.ok()) std::abort();
    store = *std::move(opened);
    registry = std::make_unique<Registry>(store.get(), &policies, &clock);
    auto policy = CompiledPolicy::FromFile(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
    if (!policy.ok() || !registry->Init(*policy).ok()) std::abort();
    Write("alice", "GB", 1990, v1::PREFERENCE_STATE_OBJECTED, "ai_training.generative");
    Write("bob", "US", 1985, v1::PREFERENCE_STATE_CONSENTED, "ai_training");
    for (int i = 0; i < 5; ++i) {
      Write("alice", "GB", 1990,
            i % 2 ? v1::PREFERENCE_STATE_CONSENTED : v1::PREFERENCE_STATE_OBJECTED,
            "ai_training.ranking");
    }
    v1::SetContentExclusionRequest exclusion;
    exclusion.set_user_id("alice");
    exclusion.set_content_id("post-9");
    exclusion.set_purpose("ai_training");
    exclusion.set_excluded(true);
    v1::SetContentExclusionResponse excluded;
    Await([&](Registry::WriteDone done) {
      registry->SetContentExclusion(exclusion, caller, &excluded, std::move(done));
    });
  }
  ~Fixture() {
    registry.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }

  void Await(const std::function<void(Registry::WriteDone)>& start) {
    if (!Registry::AwaitWrite(start).ok()) std::abort();
  }
  void Write(const std::string& user, const std::string& jurisdiction, int year,
             v1::PreferenceState state, const std::string& purpose) {
    v1::UpdateSubjectRequest attributes;
    attributes.set_user_id(user);
    attributes.mutable_attributes()->set_jurisdiction(jurisdiction);
    attributes.mutable_attributes()->mutable_birth_date()->set_year(year);
    attributes.mutable_attributes()->mutable_birth_date()->set_month(3);
    attributes.mutable_attributes()->mutable_birth_date()->set_day(4);
    attributes.mutable_update_mask()->add_paths("jurisdiction");
    attributes.mutable_update_mask()->add_paths("birth_date");
    v1::UpdateSubjectResponse updated;
    Await([&](Registry::WriteDone done) {
      registry->UpdateSubject(attributes, caller, &updated, std::move(done));
    });
    v1::SetPreferenceRequest preference;
    preference.set_user_id(user);
    preference.set_purpose(purpose);
    preference.set_state(state);
    v1::SetPreferenceResponse set;
    Await([&](Registry::WriteDone done) {
      registry->SetPreference(preference, caller, &set, std::move(done));
    });
  }
};

}  // namespace

Registry& FuzzRegistry() {
  static Fixture fixture;  // closed, and its directory removed, at exit
  return *fixture.registry;
}

}  // namespace consent::fuzzing
