// SetPreference latency while the hourly purge of expired request ids
// runs, against the same load without it, in one run (docs/reliability.md).
//
//   build/bench/purge_bench [--ids=1000000] [--writers=16] [--seconds=10]
//
// Fills a fresh store with --ids request ids (BatchSetPreferences of 1,000
// items, each with its own id) at a fake time T, moves the clock 25 hours
// on (every id expired), then runs --writers threads of synced
// SetPreference calls through the registry for --seconds without a purge,
// then for --seconds while PurgeRequestIds runs, and prints the latency
// percentiles of both phases and how long the purge took.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/policy.h"
#include "server/registry.h"
#include "storage/consent_store.h"
#include "tests/fake_clock.h"

ABSL_FLAG(int64_t, ids, 1'000'000, "request ids to fill the store with");
ABSL_FLAG(int, writers, 16, "threads writing SetPreference, one call in flight each");
ABSL_FLAG(int, seconds, 10, "length of each phase");
ABSL_FLAG(std::string, data_dir, "", "where the store goes (default: a temporary directory)");

namespace consent {
namespace {

struct Phase {
  std::vector<double> micros;
  double purge_seconds = 0;
  int64_t purged = 0;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

int Run() {
  const std::string dir =
      absl::GetFlag(FLAGS_data_dir).empty()
          ? (std::filesystem::temp_directory_path() / "consent-purge-bench").string()
          : absl::GetFlag(FLAGS_data_dir);
  std::filesystem::remove_all(dir);
  const absl::Time start = absl::FromUnixSeconds(1'780'000'000);
  FakeClock clock(start);
  storage::StoreOptions options;
  options.data_dir = dir;
  auto store = storage::ConsentStore::Open(options);
  if (!store.ok()) {
    std::fprintf(stderr, "purge_bench: %s\n", store.status().ToString().c_str());
    return 1;
  }
  PolicyHolder policies;
  Registry registry(store->get(), &policies, &clock);
  auto policy = CompiledPolicy::FromFile(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
  if (!policy.ok() || !registry.Init(*policy).ok()) return 1;
  const CallContext caller{"bench"};

  const int64_t ids = absl::GetFlag(FLAGS_ids);
  const absl::Time fill_start = absl::Now();
  for (int64_t done = 0; done < ids;) {
    v1::BatchSetPreferencesRequest batch;
    for (int k = 0; k < 1000 && done < ids; ++k, ++done) {
      v1::SetPreferenceRequest* r = batch.add_requests();
      r->set_user_id(absl::StrCat("old-", done % 100'000));
      r->set_purpose("ai_training");
      r->set_state(v1::PREFERENCE_STATE_OBJECTED);
      r->set_request_id(absl::StrCat("request-", done));
    }
    v1::BatchSetPreferencesResponse response;
    absl::Status s = Registry::AwaitWrite([&](Registry::WriteDone d) {
      registry.BatchSetPreferences(batch, caller, &response, std::move(d));
    });
    if (!s.ok()) {
      std::fprintf(stderr, "purge_bench: filling: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::printf("filled %lld request ids in %.1f s\n", static_cast<long long>(ids),
              absl::ToDoubleSeconds(absl::Now() - fill_start));
  clock.Set(start + absl::Hours(25));

  std::atomic<int64_t> next{0};
  auto phase = [&](bool purge) {
    Phase out;
    absl::Mutex mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < absl::GetFlag(FLAGS_writers); ++t) {
      threads.emplace_back([&] {
        std::vector<double> mine;
        while (!stop.load()) {
          v1::SetPreferenceRequest r;
          r.set_user_id(absl::StrCat("new-", next.fetch_add(1) % 100'000));
          r.set_purpose("ai_training");
          r.set_state(v1::PREFERENCE_STATE_OBJECTED);
          v1::SetPreferenceResponse response;
          const absl::Time t0 = absl::Now();
          absl::Status s = Registry::AwaitWrite([&](Registry::WriteDone d) {
            registry.SetPreference(r, caller, &response, std::move(d));
          });
          if (!s.ok()) std::abort();
          mine.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
        }
        absl::MutexLock lock(&mu);
        out.micros.insert(out.micros.end(), mine.begin(), mine.end());
      });
    }
    if (purge) {
      const absl::Time t0 = absl::Now();
      auto purged = (*store)->PurgeRequestIds(clock.Now() - absl::Hours(24));
      out.purge_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
      out.purged = purged.ok() ? *purged : -1;
    }
    absl::SleepFor(
        absl::Seconds(absl::GetFlag(FLAGS_seconds)) -
        absl::Seconds(std::min<double>(out.purge_seconds, absl::GetFlag(FLAGS_seconds))));
    stop.store(true);
    for (auto& t : threads) t.join();
    return out;
  };
  for (bool purge : {false, true}) {
    Phase p = phase(purge);
    const size_t n = p.micros.size();
    std::printf("%-13s %8zu writes  p50 %8.0f us  p99 %8.0f us  p99.9 %8.0f us  max %8.0f us",
                purge ? "during purge" : "no purge", n, Percentile(p.micros, 0.5),
                Percentile(p.micros, 0.99), Percentile(p.micros, 0.999), Percentile(p.micros, 1.0));
    if (purge) {
      std::printf("  (purged %lld ids in %.2f s)", static_cast<long long>(p.purged),
                  p.purge_seconds);
    }
    std::printf("\n");
  }
  store->reset();
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace consent

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return consent::Run();
}
