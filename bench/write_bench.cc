// Write throughput through the registry with and without the audit hash
// chain, in the same run: every write synced, as consentd does it.
//
//   build/bench/write_bench --benchmark_repetitions=5
//       --benchmark_report_aggregates_only=true   (one command line)
//
// Argument 1 = chain on (as consentd), 0 = chain off (StoreOptions::
// hash_chain, which exists for this measurement only). Results:
// docs/history.md.
//
// BM_SetPreferenceInFlight/N keeps N SetPreferences in flight from one
// thread, as consentd's callers do over gRPC, with the subject index on
// (consentd's default): the store's and the registry's share of a synced
// write, with no gRPC (writes arrive faster than through gRPC, so groups
// are larger than consentd's at the same count). Its `cpu_us` counter is
// the whole process's CPU per write. WRITE_BENCH_SEED names a data
// directory to start from (a copy is used, e.g. one `consent-bench
// preload --users=1000000` made), WRITE_BENCH_USERS the users written
// (user-0 .. user-(N-1), default 100,000). Results: docs/performance.md,
// "The store's share of a synced write".
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/clock.h"
#include "core/policy.h"
#include "server/process_stats.h"
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

  // `seed`: a data directory to start from (copied), or empty.
  explicit Fixture(bool chain, bool subject_index = false, const std::string& seed = "") {
    dir = (std::filesystem::temp_directory_path() /
           absl::StrCat("consent-write-bench-", chain ? "chain" : "plain"))
              .string();
    std::filesystem::remove_all(dir);
    if (!seed.empty()) {
      std::filesystem::copy(seed, dir, std::filesystem::copy_options::recursive);
    }
    storage::StoreOptions options;
    options.data_dir = dir;
    options.hash_chain = chain;
    options.subject_index = subject_index;
    // Measured once the index is loaded, whose loading takes CPU too.
    auto loaded = std::make_shared<absl::Notification>();
    options.on_index_loaded = [loaded](const absl::Status&, int64_t, absl::Duration) {
      if (!loaded->HasBeenNotified()) loaded->Notify();
    };
    store = *storage::ConsentStore::Open(options);
    registry = std::make_unique<Registry>(store.get(), &policies, &clock);
    auto policy = CompiledPolicy::FromFile(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
    if (!policy.ok() || !registry->Init(*policy).ok()) std::abort();
    if (subject_index) loaded->WaitForNotification();
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

// Microseconds of CPU the whole process has used (all threads).
double ProcessCpuMicros() {
  auto stats = ReadProcessStats();
  if (!stats.ok()) std::abort();
  return stats->cpu_seconds * 1e6;
}

// state.range(0) synced SetPreferences in flight; one per iteration.
void BM_SetPreferenceInFlight(benchmark::State& state) {
  const char* seed = std::getenv("WRITE_BENCH_SEED");
  const char* users_env = std::getenv("WRITE_BENCH_USERS");
  const int64_t users = users_env != nullptr ? std::atoll(users_env) : 100000;
  Fixture f(/*chain=*/true, /*subject_index=*/true, seed != nullptr ? seed : "");
  const CallContext caller{"bench"};
  const int in_flight = static_cast<int>(state.range(0));
  // Each slot's request and response live until its write is answered.
  struct Slot {
    v1::SetPreferenceRequest request;
    v1::SetPreferenceResponse response;
  };
  std::vector<Slot> slots(in_flight);
  absl::Mutex mu;
  std::vector<int> free_slots;
  std::atomic<bool> failed{false};
  std::mt19937_64 random(1);
  std::uniform_int_distribution<int64_t> pick(0, users - 1);
  auto start = [&](int k) {
    Slot& slot = slots[k];
    slot.request.set_user_id(absl::StrCat("user-", pick(random)));
    slot.request.set_purpose("ai_training");
    slot.request.set_state(pick(random) % 2 == 0 ? v1::PREFERENCE_STATE_OBJECTED
                                                 : v1::PREFERENCE_STATE_CLEARED);
    f.registry->SetPreference(slot.request, caller, &slot.response, [&, k](absl::Status s) {
      if (!s.ok()) failed = true;
      absl::MutexLock lock(&mu);
      free_slots.push_back(k);
    });
  };
  for (int k = 0; k < in_flight; ++k) start(k);
  const double cpu_before = ProcessCpuMicros();
  for (auto _ : state) {
    int k;
    {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](std::vector<int>* free) { return !free->empty(); }, &free_slots));
      k = free_slots.back();
      free_slots.pop_back();
    }
    start(k);
  }
  const double cpu = ProcessCpuMicros() - cpu_before;
  {
    absl::MutexLock lock(&mu);
    auto all_back = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return free_slots.size() == static_cast<size_t>(in_flight);
    };
    mu.Await(absl::Condition(&all_back));
  }
  if (failed) state.SkipWithError("a write failed");
  state.SetItemsProcessed(state.iterations());
  state.counters["cpu_us"] = cpu / static_cast<double>(state.iterations());
}
BENCHMARK(BM_SetPreferenceInFlight)->Arg(64)->MinTime(5.0)->UseRealTime();

}  // namespace
}  // namespace consent

BENCHMARK_MAIN();
