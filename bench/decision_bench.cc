// Cost of one decision through the registry (validation, RocksDB read,
// rules), current versus point in time (as_of), in process: no gRPC.
//
//   build/bench/decision_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line)
//
// The store holds kUsers subjects (UK adults), each with kEventsPerUser
// preference changes one simulated day apart, so an as_of check folds a
// realistic history. Results: docs/decisions.md.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/decision_engine.h"
#include "core/policy.h"
#include "server/registry.h"
#include "storage/consent_store.h"
#include "tests/fake_clock.h"

namespace consent {
namespace {

constexpr int kUsers = 5000;
constexpr int kEventsPerUser = 10;
const absl::Time kStart = absl::FromUnixSeconds(1'767'225'600);  // 2026-01-01

struct Fixture {
  std::string dir;
  FakeClock clock{kStart};
  std::unique_ptr<storage::ConsentStore> store;
  PolicyHolder policies;
  std::unique_ptr<Registry> registry;

  Fixture() {
    dir = (std::filesystem::temp_directory_path() / "consent-decision-bench").string();
    std::filesystem::remove_all(dir);
    storage::StoreOptions options;
    options.data_dir = dir;
    store = *storage::ConsentStore::Open(options);
    registry = std::make_unique<Registry>(store.get(), &policies, &clock);
    auto policy = CompiledPolicy::FromFile(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
    if (!policy.ok() || !registry->Init(*policy).ok()) std::abort();
    const CallContext caller{"bench"};
    for (int u = 0; u < kUsers; ++u) {
      v1::UpdateSubjectRequest r;
      r.set_user_id(absl::StrCat("user-", u));
      r.mutable_attributes()->set_jurisdiction("GB");
      auto* birth = r.mutable_attributes()->mutable_birth_date();
      birth->set_year(1980);
      birth->set_month(1);
      birth->set_day(1);
      r.mutable_update_mask()->add_paths("jurisdiction");
      r.mutable_update_mask()->add_paths("birth_date");
      v1::UpdateSubjectResponse response;
      if (!Registry::AwaitWrite([&](Registry::WriteDone done) {
             registry->UpdateSubject(r, caller, &response, std::move(done));
           }).ok()) {
        std::abort();
      }
    }
    for (int e = 0; e < kEventsPerUser; ++e) {
      clock.Advance(absl::Hours(24));
      for (int first = 0; first < kUsers; first += kMaxBatchSetItems) {
        v1::BatchSetPreferencesRequest batch;
        for (int u = first; u < std::min(kUsers, first + kMaxBatchSetItems); ++u) {
          v1::SetPreferenceRequest* r = batch.add_requests();
          r->set_user_id(absl::StrCat("user-", u));
          r->set_purpose(e % 3 == 0 ? "ai_training" : "ai_training.generative");
          r->set_state(e % 2 == 0 ? v1::PREFERENCE_STATE_OBJECTED : v1::PREFERENCE_STATE_CONSENTED);
        }
        v1::BatchSetPreferencesResponse response;
        if (!Registry::AwaitWrite([&](Registry::WriteDone done) {
               registry->BatchSetPreferences(batch, caller, &response, std::move(done));
             }).ok()) {
          std::abort();
        }
      }
    }
    clock.Advance(absl::Hours(24));
  }
  ~Fixture() {
    registry.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
};

Fixture& Shared() {
  static Fixture* fixture = new Fixture();
  return *fixture;
}

v1::CheckRequest Request(int user) {
  v1::CheckRequest request;
  request.set_purpose("ai_training.generative");
  request.set_user_id(absl::StrCat("user-", user));
  v1::Content* c = request.mutable_content();
  c->set_content_id("post-1");
  c->set_content_type(v1::CONTENT_TYPE_POST);
  c->set_visibility(v1::VISIBILITY_PUBLIC);
  c->mutable_create_time()->set_seconds(1'700'000'000);
  return request;
}

void BM_CheckCurrent(benchmark::State& state) {
  Fixture& f = Shared();
  std::mt19937 random(1);
  std::vector<v1::CheckRequest> requests;
  for (int i = 0; i < 1024; ++i) requests.push_back(Request(static_cast<int>(random() % kUsers)));
  size_t i = 0;
  for (auto _ : state) {
    v1::CheckResponse response;
    if (!f.registry->Check(requests[i++ % requests.size()], &response).ok()) std::abort();
    benchmark::DoNotOptimize(response);
  }
}
BENCHMARK(BM_CheckCurrent);

// as_of at a random day inside the users' history (about 5 of the 11
// events applied on average; every event is read up to the first later one).
void BM_CheckAsOf(benchmark::State& state) {
  Fixture& f = Shared();
  std::mt19937 random(2);
  std::vector<v1::CheckRequest> requests;
  for (int i = 0; i < 1024; ++i) {
    v1::CheckRequest r = Request(static_cast<int>(random() % kUsers));
    const absl::Time at =
        kStart + absl::Hours(12 + 24 * static_cast<int>(random() % kEventsPerUser));
    r.mutable_as_of()->set_seconds(absl::ToUnixSeconds(at));
    requests.push_back(std::move(r));
  }
  size_t i = 0;
  for (auto _ : state) {
    v1::CheckResponse response;
    if (!f.registry->Check(requests[i++ % requests.size()], &response).ok()) std::abort();
    benchmark::DoNotOptimize(response);
  }
}
BENCHMARK(BM_CheckAsOf);

// The rules alone, on a record already in memory.
void BM_DecideOnly(benchmark::State& state) {
  Fixture& f = Shared();
  SubjectViewArena arena;
  const SubjectView* subject = arena.Add(*f.store->GetSubject("user-1"));
  const v1::CheckRequest request = Request(1);
  const auto policy = f.policies.Get();
  const absl::Time at = f.clock.Now();
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        Decide(*policy, CheckSubject{subject, {}}, request.purpose(), request.content(), at));
  }
}
BENCHMARK(BM_DecideOnly);

}  // namespace
}  // namespace consent

BENCHMARK_MAIN();
