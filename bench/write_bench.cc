// Write throughput through the registry with and without the audit hash
// chain, in the same run: every write synced, as consentd does it.
//
//   build/bench/write_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line)
//
// Argument 1 = chain on (as consentd), 0 = chain off (StoreOptions::
// hash_chain, which exists for this measurement only). Results:
// docs/history.md.
#include <benchmark/benchmark.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/registry.h"
#include "storage/consent_store.h"

namespace consent {
namespace {

struct Fixture {
  std::string dir;
  RealClock clock;
  std::unique_ptr<storage::ConsentStore> store;
  PolicyHolder policies;
  std::unique_ptr<Registry> registry;

  explicit Fixture(bool chain) {
    dir = (std::filesystem::temp_directory_path() /
           absl::StrCat("consent-write-bench-", chain ? "chain" : "plain"))
              .string();
    std::filesystem::remove_all(dir);
    storage::StoreOptions options;
    options.data_dir = dir;
    options.hash_chain = chain;
    store = *storage::ConsentStore::Open(options);
    registry = std::make_unique<Registry>(store.get(), &policies, &clock);
    auto policy = CompiledPolicy::FromFile(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
    if (!policy.ok() || !registry->Init(*policy).ok()) std::abort();
  }
  ~Fixture() {
    registry.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }
};

v1::SetPreferenceRequest Item(int64_t i) {
  v1::SetPreferenceRequest r;
  r.set_user_id(absl::StrCat("user-", i % 100000));
  r.set_purpose("ai_training");
  r.set_state(i % 2 == 0 ? v1::PREFERENCE_STATE_OBJECTED : v1::PREFERENCE_STATE_CONSENTED);
  r.mutable_source()->set_channel("settings_page");
  r.mutable_source()->set_notice_id("ai-notice");
  r.mutable_source()->set_notice_version("3");
  return r;
}

// One synced SetPreference per iteration.
void BM_SetPreference(benchmark::State& state) {
  Fixture f(state.range(0) == 1);
  const CallContext caller{"bench"};
  int64_t i = 0;
  for (auto _ : state) {
    // The request must outlive the write, which finishes on another thread.
    const v1::SetPreferenceRequest request = Item(i++);
    v1::SetPreferenceResponse response;
    if (!Registry::AwaitWrite([&](Registry::WriteDone done) {
           f.registry->SetPreference(request, caller, &response, std::move(done));
         }).ok()) {
      std::abort();
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SetPreference)->Arg(0)->Arg(1)->MinTime(2.0)->UseRealTime();

// One synced BatchSetPreferences of 100 items per iteration: the sync is
// shared, so per-event work (such as hashing) shows more.
void BM_BatchSetPreferences100(benchmark::State& state) {
  Fixture f(state.range(0) == 1);
  const CallContext caller{"bench"};
  int64_t i = 0;
  for (auto _ : state) {
    v1::BatchSetPreferencesRequest batch;
    for (int k = 0; k < 100; ++k) *batch.add_requests() = Item(i++);
    v1::BatchSetPreferencesResponse response;
    if (!Registry::AwaitWrite([&](Registry::WriteDone done) {
           f.registry->BatchSetPreferences(batch, caller, &response, std::move(done));
         }).ok()) {
      std::abort();
    }
  }
  state.SetItemsProcessed(state.iterations() * 100);
}
BENCHMARK(BM_BatchSetPreferences100)->Arg(0)->Arg(1)->MinTime(2.0)->UseRealTime();

}  // namespace
}  // namespace consent

BENCHMARK_MAIN();
