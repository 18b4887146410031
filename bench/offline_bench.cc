// Offline decisions (consent_offline): a snapshot of N subjects written,
// signed, loaded (time, resident memory against the file's size), then
// decisions per second from batches, beside the lookup alone and the
// rules alone in the same run (Google Benchmark).
//
//   OFFLINE_BENCH_SUBJECTS=10000000 build/bench/offline_bench
//       --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// Subjects as consent-bench preload makes them: "user-<i>", GB, born
// 1980-01-01, every tenth objecting to ai_training. The snapshot is kept in
// OFFLINE_BENCH_DIR (default /tmp/consent-offline-bench) as
// subjects-<N>-v<format version>.snap and reused by later runs of the same
// size and format. Results: docs/performance.md ("Offline
// decisions").
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/offline/offline_registry.h"
#include "core/decision_engine.h"
#include "core/snapshot_format.h"
#include "core/snapshot_signing.h"

namespace consent {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'767'225'600);  // 2026-01-01

int64_t Subjects() {
  const char* env = std::getenv("OFFLINE_BENCH_SUBJECTS");
  return env != nullptr ? std::atoll(env) : 1'000'000;
}

std::string Id(int64_t i) { return absl::StrCat("user-", i); }

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

void Run(const std::string& command) {
  if (std::system(command.c_str()) != 0) {
    std::cerr << "offline_bench: failed: " << command << "\n";
    std::exit(1);
  }
}

// Writes the signed snapshot of `n` subjects unless it is there.
std::string MakeSnapshot(const std::string& dir, int64_t n) {
  std::filesystem::create_directories(dir);
  const std::string key = dir + "/sign.pem";
  if (!std::filesystem::exists(key)) {
    Run("openssl genpkey -algorithm ed25519 -out " + key);
    Run("openssl pkey -in " + key + " -pubout -out " + dir + "/sign.pub");
  }
  // Named by format too: a file an older build wrote is not reused.
  const std::string path =
      absl::StrCat(dir, "/subjects-", n, "-v", snapshot::kFormatVersion, ".snap");
  if (std::filesystem::exists(path)) return path;
  const absl::Time start = absl::Now();
  std::ofstream out(path + ".tmp", std::ios::binary);
  snapshot::Sha256 sha;
  snapshot::SnapshotWriter writer([&](absl::string_view bytes) {
    sha.Update(bytes);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return absl::OkStatus();
  });
  PreferenceView objection;
  objection.purpose = "ai_training";
  objection.state = v1::PREFERENCE_STATE_OBJECTED;
  for (int64_t i = 0; i < n; ++i) {
    SubjectView view;
    view.jurisdiction = "GB";
    view.birth_date = DateView{1980, 1, 1};
    view.account_state = v1::ACCOUNT_STATE_ACTIVE;
    view.revision = i + 1;
    objection.revision = i + 1;
    if (i % 10 == 0) view.preferences = {&objection, 1};
    if (!writer.Add(Id(i), view, {}).ok()) std::abort();
  }
  snapshot::SnapshotInfo info;
  info.revision = n;
  info.create_time = kNow;
  std::ifstream policy(CONSENT_SOURCE_DIR "/deploy/policy/default.textproto");
  info.policy_text.assign(std::istreambuf_iterator<char>(policy), {});
  if (!writer.Finish(info).ok()) std::abort();
  auto signing = snapshot::SigningKey::FromPemFile(key);
  if (!signing.ok()) std::abort();
  const std::string trailer = signing->Trailer(sha.Finish()).value();
  out.write(trailer.data(), static_cast<std::streamsize>(trailer.size()));
  out.close();
  std::filesystem::rename(path + ".tmp", path);
  std::cerr << absl::StrFormat("offline_bench: wrote %d subjects in %s\n", n,
                               absl::FormatDuration(absl::Now() - start));
  return path;
}

struct Fixture {
  std::unique_ptr<offline::OfflineRegistry> registry;
  std::vector<std::string> ids;  // random picks, uniform over the subjects
  v1::Content content;
};

Fixture* shared = nullptr;

void BM_OfflineCheckMany(benchmark::State& state) {
  Fixture& f = *shared;
  const size_t batch = static_cast<size_t>(state.range(0));
  std::vector<absl::string_view> views(f.ids.begin(), f.ids.end());
  std::vector<offline::OfflineDecision> out(batch);
  size_t next = 0;
  int64_t allowed = 0;
  for (auto _ : state) {
    if (next + batch > views.size()) next = 0;
    if (!f.registry
             ->CheckMany("ai_training", absl::MakeConstSpan(views).subspan(next, batch), {},
                         {&f.content, 1}, kNow, out.data())
             .ok()) {
      state.SkipWithError("CheckMany failed");
      break;
    }
    allowed += out[0].allowed;
    next += batch;
  }
  benchmark::DoNotOptimize(allowed);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(batch));
}
BENCHMARK(BM_OfflineCheckMany)->Arg(1000)->Arg(10000);

// The lookup alone (hash, slot, record's id compared), in groups as
// CheckMany does it, with nothing decoded or decided.
void BM_LookupAlone(benchmark::State& state) {
  Fixture& f = *shared;
  const snapshot::SnapshotReader& r = f.registry->snapshot();
  constexpr size_t kGroup = 64, kBatch = 1024;
  uint64_t hashes[kGroup], located[kGroup];
  size_t next = 0;
  uint64_t found = 0;
  for (auto _ : state) {
    if (next + kBatch > f.ids.size()) next = 0;
    for (size_t g = next; g < next + kBatch; g += kGroup) {
      for (size_t k = 0; k < kGroup; ++k) hashes[k] = snapshot::IdHash(f.ids[g + k]);
      for (size_t k = 0; k < kGroup; ++k) located[k] = r.Locate(hashes[k]);
      for (size_t k = 0; k < kGroup; ++k) r.Load(located[k]);
      for (size_t k = 0; k < kGroup; ++k) found += r.Find(f.ids[g + k], hashes[k], located[k]) != 0;
    }
    next += kBatch;
  }
  benchmark::DoNotOptimize(found);
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(kBatch));
}
BENCHMARK(BM_LookupAlone);

// The rules alone on a record already decoded, as a batch runs them (the
// rule found once per jurisdiction), and as a single check does.
void BM_RulesAlone(benchmark::State& state) {
  Fixture& f = *shared;
  SubjectView view;
  view.jurisdiction = "GB";
  view.birth_date = DateView{1980, 1, 1};
  view.account_state = v1::ACCOUNT_STATE_ACTIVE;
  const auto policy = f.registry->policy();
  RuleFinder rules(*policy, "ai_training");
  for (auto _ : state) {
    benchmark::DoNotOptimize(Decide(*policy, CheckSubject{&view, {}}, "ai_training", f.content,
                                    kNow, nullptr, state.range(0) ? &rules : nullptr));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RulesAlone)->Arg(1)->Arg(0);

}  // namespace
}  // namespace consent

int main(int argc, char** argv) {
  using namespace consent;
  benchmark::Initialize(&argc, argv);
  const int64_t n = Subjects();
  const char* dir_env = std::getenv("OFFLINE_BENCH_DIR");
  const std::string dir = dir_env != nullptr ? dir_env : "/tmp/consent-offline-bench";
  const std::string path = MakeSnapshot(dir, n);
  const int64_t file_size = static_cast<int64_t>(std::filesystem::file_size(path));
  auto public_key = snapshot::ReadPublicKeyFile(dir + "/sign.pub");
  if (!public_key.ok()) std::abort();
  // The file read once, so the load below is timed from the page cache, as
  // a job that just copied the file would see it.
  Run("cat " + path + " > /dev/null");
  Fixture fixture;
  const int64_t rss_before = ResidentBytes();
  const absl::Time start = absl::Now();
  auto loaded = offline::OfflineRegistry::Load(path, *public_key);
  const absl::Duration load_time = absl::Now() - start;
  if (!loaded.ok()) {
    std::cerr << loaded.status() << "\n";
    return 1;
  }
  const int64_t rss_loaded = ResidentBytes() - rss_before;
  fixture.registry = *std::move(loaded);
  std::mt19937_64 rng(7);
  fixture.ids.reserve(1 << 20);
  for (int i = 0; i < (1 << 20); ++i) fixture.ids.push_back(Id(static_cast<int64_t>(rng() % n)));
  fixture.content.set_content_id("post-1");
  fixture.content.set_content_type(v1::CONTENT_TYPE_POST);
  fixture.content.set_visibility(v1::VISIBILITY_PUBLIC);
  fixture.content.mutable_create_time()->set_seconds(1'700'000'000);
  shared = &fixture;
  std::cerr << absl::StrFormat(
      "offline_bench: %d subjects, file %d bytes (%.1f a subject), loaded (signature checked) "
      "in %s, resident memory +%d bytes (%.3f of the file)\n",
      n, file_size, static_cast<double>(file_size) / n, absl::FormatDuration(load_time), rss_loaded,
      static_cast<double>(rss_loaded) / file_size);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
