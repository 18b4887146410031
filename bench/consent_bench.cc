// consent-bench: load generator for consentd on gRPC's asynchronous
// completion-queue client API, and an offline preloader.
//
//   consent-bench [flags] MODE
//     unary        Check
//     batch        BatchCheck of --batch items
//     stream       StreamCheck, --batch items per message
//     write        SetPreference, each acknowledged (synced) before the next
//     write-batch  BatchSetPreferences of --batch items
//     notices      BatchRecordNotices of --batch items
//     mixed        Check and SetPreference by --read_ratio; verifies
//                  read-your-writes: after each acknowledged write, the
//                  next check of that user must reflect it
//     preload      fill --data_dir with --users subjects, offline
//     check-request  write one Check (of user-<users/2>) to stdout as gRPC
//                  frames it, for an outside HTTP/2 load generator to
//                  replay (h2load in bench/run.sh)
//
// Closed loop (--concurrency calls in flight) unless --rate sets a fixed
// arrival rate; then latency is measured from each call's scheduled start,
// so a slow server cannot hide its queueing. Output: one JSON object per
// run on stdout, a short human line on stderr. docs/performance.md.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/histogram.h"
#include "bench/user_picker.h"
#include "client/consent_client.h"
#include "client/credential_flags.h"
#include "consent/v1/registry.grpc.pb.h"
#include "core/proto_time.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "storage/consent_store.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "consentd address.");
ABSL_FLAG(int, concurrency, 32, "Calls (or streams) in flight.");
ABSL_FLAG(int, connections, 4, "HTTP/2 connections the calls are spread over.");
ABSL_FLAG(int, threads, 2, "Completion-queue threads.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(10), "Measured time.");
ABSL_FLAG(absl::Duration, warmup, absl::Seconds(2), "Unmeasured time before it.");
ABSL_FLAG(double, rate, 0, "Calls per second, fixed arrival rate; 0: closed loop.");
ABSL_FLAG(int, batch, 100,
          "Items per BatchCheck, StreamCheck message, BatchSetPreferences or BatchRecordNotices.");
ABSL_FLAG(int64_t, users, 1000000, "User ids are user-0 .. user-(N-1).");
ABSL_FLAG(double, objecting, 0.1, "preload: fraction of subjects that objected to ai_training.");
ABSL_FLAG(std::string, distribution, "uniform", "How users are picked: uniform or zipf.");
ABSL_FLAG(double, read_ratio, 0.95, "mixed: fraction of calls that are checks.");
ABSL_FLAG(std::string, data_dir, "", "preload: the data directory to fill.");

namespace consent::bench {
namespace {

int64_t NowNanos() { return absl::GetCurrentTimeNanos(); }

std::string UserId(int64_t n) { return absl::StrCat("user-", n); }

// Sets `*out` to `prefix` and n >= 0 in decimal, in the memory it has: a
// request's ids are rewritten in place (absl::StrCat and the copy into the
// field were 8% of the load generator's CPU under BatchCheck:
// docs/performance.md).
void SetNumbered(absl::string_view prefix, int64_t n, std::string* out) {
  char digits[20];
  char* begin = digits + sizeof(digits);
  auto rest = static_cast<uint64_t>(n);
  do {
    *--begin = static_cast<char>('0' + rest % 10);
    rest /= 10;
  } while (rest != 0);
  out->assign(prefix.data(), prefix.size());
  out->append(begin, static_cast<size_t>(digits + sizeof(digits) - begin));
}
void SetUserId(int64_t n, std::string* out) { SetNumbered("user-", n, out); }

// The i-th element of `items`, added if there are fewer. Requests are
// rebuilt in place over the previous call's elements rather than cleared:
// Clear() deletes each item's sub-messages and strings, and allocating them
// again cost the load generator a malloc and a free per field on the cores
// it shares with the server (docs/performance.md). Every field is set again.
template <typename Item>
Item* ItemAt(google::protobuf::RepeatedPtrField<Item>* items, int i) {
  return i < items->size() ? items->Mutable(i) : items->Add();
}

void FillContent(int64_t n, v1::Content* c) {
  SetNumbered("post-", n, c->mutable_content_id());
  c->set_content_type(v1::CONTENT_TYPE_POST);
  c->set_visibility(v1::VISIBILITY_PUBLIC);
  c->mutable_create_time()->set_seconds(1'714'564'800);  // 2024-05-01
}

// What one completion-queue thread measured.
struct Stats {
  Histogram latency;
  int64_t calls = 0;
  int64_t decisions = 0;
  int64_t violations = 0;
  std::map<std::string, int64_t> errors;
};

enum class Mode { kUnary, kBatch, kStream, kWrite, kWriteBatch, kNotices, kMixed };

struct Run {
  Mode mode;
  int batch;
  double read_ratio;
  int64_t measure_from = 0, measure_until = 0;  // NowNanos
  int64_t start = 0;
  double rate = 0;
  int concurrency = 0;
  std::atomic<int64_t> next_arrival{0};
  std::atomic<bool> stopping{false};
  std::atomic<int> finished{0};
  // The last successful answer in the measured time, and the longest time
  // without one (a failover's stall), in NowNanos.
  std::atomic<int64_t> last_ok{0};
  std::atomic<int64_t> longest_gap{0};
  const UserPicker* picker = nullptr;
  std::mutex violations_mu;
  std::vector<std::string> violation_samples;
};

class Slot;
struct Tag {
  Slot* slot;
  int kind;
};
enum TagKind {
  kAlarm,
  kDone,
  kStreamStart,
  kStreamWrite,
  kStreamRead,
  kStreamWritesDone,
  kStreamFinish
};

// One call (or stream) in flight, issuing the next when the last completes.
class Slot {
 public:
  Slot(Run* run, int index, v1::ConsentRegistry::Stub* stub, grpc::CompletionQueue* cq,
       Stats* stats)
      : run_(run), index_(index), stub_(stub), cq_(cq), stats_(stats) {}

  void Begin() {
    if (run_->mode == Mode::kStream) {
      context_ = std::make_unique<grpc::ClientContext>();
      // Prepare, then start: the start's completion may run on a queue
      // thread at once, and must find stream_ set.
      stream_ = stub_->PrepareAsyncStreamCheck(context_.get(), cq_);
      stream_->StartCall(&tags_[kStreamStart]);
    } else {
      Schedule();
    }
  }

  void OnEvent(int kind, bool ok) {
    switch (kind) {
      case kAlarm:
        // The slot was free before the call's time: the alarm's own
        // lateness (timer granularity) is the client's, not the server's.
        intended_ = NowNanos();
        Issue();
        break;
      case kDone:
        Complete(status_);
        Schedule();
        break;
      case kStreamStart:
        if (!ok) return Finish();
        Schedule();
        break;
      case kStreamWrite:
        if (!ok) return EndStream();
        stream_->Read(&stream_response_, &tags_[kStreamRead]);
        break;
      case kStreamRead:
        if (!ok) return EndStream();
        Complete(grpc::Status::OK);
        Schedule();
        break;
      case kStreamWritesDone:
        stream_->Finish(&status_, &tags_[kStreamFinish]);
        break;
      case kStreamFinish:
        if (!status_.ok() && !run_->stopping.load()) Count(status_);
        Finish();
        break;
    }
  }

 private:
  // The next call: now (closed loop) or at its scheduled arrival time.
  void Schedule() {
    if (run_->stopping.load()) {
      if (run_->mode == Mode::kStream) return EndStream();
      return Finish();
    }
    if (run_->rate <= 0) {
      intended_ = NowNanos();
      return Issue();
    }
    const int64_t k = run_->next_arrival.fetch_add(1);
    intended_ = run_->start + static_cast<int64_t>(static_cast<double>(k) * 1e9 / run_->rate);
    if (intended_ <= NowNanos()) return Issue();
    alarm_.Set(cq_, absl::ToChronoTime(absl::FromUnixNanos(intended_)), &tags_[kAlarm]);
  }

  void Issue() {
    if (run_->rate <= 0) intended_ = NowNanos();
    const Mode mode = run_->mode;
    if (mode == Mode::kStream) {
      stream_request_.set_purpose("ai_training");
      for (int i = 0; i < run_->batch; ++i) {
        const int64_t u = run_->picker->Pick(random_);
        v1::CheckItem* item = ItemAt(stream_request_.mutable_items(), i);
        SetUserId(u, item->mutable_user_id());
        FillContent(u, item->mutable_content());
      }
      stream_->Write(stream_request_, &tags_[kStreamWrite]);
      return;
    }
    context_ = std::make_unique<grpc::ClientContext>();
    context_->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    bool write = mode == Mode::kWrite || mode == Mode::kWriteBatch || mode == Mode::kNotices;
    if (mode == Mode::kMixed) {
      // After a write, the next call checks that user: read-your-writes.
      write = !verify_user_ && absl::Bernoulli(random_, 1.0 - run_->read_ratio);
    }
    kind_ = mode == Mode::kNotices ? 4
            : write                ? (mode == Mode::kWriteBatch ? 3 : 2)
                                   : (mode == Mode::kBatch ? 1 : 0);
    switch (kind_) {
      case 0: {
        check_.set_purpose("ai_training");
        int64_t u = verify_user_ ? *verify_user_ : run_->picker->Pick(random_);
        SetUserId(u, check_.mutable_user_id());
        FillContent(u, check_.mutable_content());
        check_rpc_ = stub_->AsyncCheck(context_.get(), check_, cq_);
        check_rpc_->Finish(&check_response_, &status_, &tags_[kDone]);
        break;
      }
      case 1: {
        batch_.set_purpose("ai_training");
        for (int i = 0; i < run_->batch; ++i) {
          const int64_t u = run_->picker->Pick(random_);
          v1::CheckItem* item = ItemAt(batch_.mutable_items(), i);
          SetUserId(u, item->mutable_user_id());
          FillContent(u, item->mutable_content());
        }
        batch_rpc_ = stub_->AsyncBatchCheck(context_.get(), batch_, cq_);
        batch_rpc_->Finish(&batch_response_, &status_, &tags_[kDone]);
        break;
      }
      case 2: {
        // In mixed mode each slot writes only its own users, so the check
        // that follows can know the exact expected answer.
        int64_t u = run_->picker->Pick(random_);
        if (mode == Mode::kMixed) u = u - u % run_->concurrency + index_;
        written_user_ = u;
        objected_ = absl::Bernoulli(random_, 0.5);
        SetUserId(u, set_.mutable_user_id());
        set_.set_purpose("ai_training");
        set_.set_state(objected_ ? v1::PREFERENCE_STATE_OBJECTED : v1::PREFERENCE_STATE_CLEARED);
        set_rpc_ = stub_->AsyncSetPreference(context_.get(), set_, cq_);
        set_rpc_->Finish(&set_response_, &status_, &tags_[kDone]);
        break;
      }
      case 3: {
        for (int i = 0; i < run_->batch; ++i) {
          v1::SetPreferenceRequest* item = ItemAt(set_batch_.mutable_requests(), i);
          SetUserId(run_->picker->Pick(random_), item->mutable_user_id());
          item->set_purpose("ai_training");
          item->set_state(absl::Bernoulli(random_, 0.5) ? v1::PREFERENCE_STATE_OBJECTED
                                                        : v1::PREFERENCE_STATE_CLEARED);
        }
        set_batch_rpc_ = stub_->AsyncBatchSetPreferences(context_.get(), set_batch_, cq_);
        set_batch_rpc_->Finish(&set_batch_response_, &status_, &tags_[kDone]);
        break;
      }
      case 4: {
        // A platform notifying its users: one notice covering ai_training,
        // delivered now, by email.
        for (int i = 0; i < run_->batch; ++i) {
          v1::RecordNoticeRequest* item = ItemAt(notices_.mutable_requests(), i);
          SetUserId(run_->picker->Pick(random_), item->mutable_user_id());
          if (item->purposes_size() == 0) {
            item->set_notice_id("ai-training-notice");
            item->set_notice_version("1");
            item->add_purposes("ai_training");
            item->set_channel(v1::NOTICE_CHANNEL_EMAIL);
          }
        }
        notices_rpc_ = stub_->AsyncBatchRecordNotices(context_.get(), notices_, cq_);
        notices_rpc_->Finish(&notices_response_, &status_, &tags_[kDone]);
        break;
      }
    }
  }

  void Count(const grpc::Status& status) {
    // gRPC and absl share the canonical code numbers.
    ++stats_->errors[absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()))];
  }

  void Complete(const grpc::Status& status) {
    const int64_t end = NowNanos();
    const bool measured = intended_ >= run_->measure_from && end <= run_->measure_until;
    int64_t decisions = 0;
    if (status.ok()) {
      if (run_->mode == Mode::kStream) {
        decisions = stream_response_.decisions_size();
      } else if (kind_ == 0) {
        decisions = 1;
        if (verify_user_) {
          const auto want = verify_objected_ ? v1::DECISION_REASON_DENIED_OBJECTION
                                             : v1::DECISION_REASON_ALLOWED_DEFAULT;
          if (check_response_.decision().reason() != want) {
            ++stats_->violations;
            std::lock_guard<std::mutex> lock(run_->violations_mu);
            if (run_->violation_samples.size() < 5) {
              run_->violation_samples.push_back(absl::StrCat(
                  UserId(*verify_user_), " wrote ", verify_objected_ ? "OBJECTED" : "CLEARED",
                  " then read ", v1::DecisionReason_Name(check_response_.decision().reason())));
            }
          }
        }
      } else if (kind_ == 1) {
        decisions = batch_response_.decisions_size();
      } else if (kind_ == 3) {
        decisions = set_batch_.requests_size();
      } else if (kind_ == 4) {
        decisions = notices_.requests_size();
      } else {
        decisions = 1;
      }
    }
    // The check after a write verifies it; a write sets up the next check.
    verify_user_.reset();
    if (status.ok() && kind_ == 2 && run_->mode == Mode::kMixed) {
      verify_user_ = written_user_;
      verify_objected_ = objected_;
    }
    if (!measured) return;
    ++stats_->calls;
    stats_->latency.Record(end - intended_);
    if (status.ok()) {
      stats_->decisions += decisions;
      const int64_t gap = end - run_->last_ok.exchange(end);
      int64_t longest = run_->longest_gap.load();
      while (gap > longest && !run_->longest_gap.compare_exchange_weak(longest, gap)) {
      }
    } else {
      Count(status);
    }
  }

  void EndStream() { stream_->WritesDone(&tags_[kStreamWritesDone]); }
  void Finish() { run_->finished.fetch_add(1); }

  Run* run_;
  int index_;
  v1::ConsentRegistry::Stub* stub_;
  grpc::CompletionQueue* cq_;
  Stats* stats_;
  Tag tags_[7] = {{this, 0}, {this, 1}, {this, 2}, {this, 3}, {this, 4}, {this, 5}, {this, 6}};
  absl::BitGen random_;
  grpc::Alarm alarm_;
  std::unique_ptr<grpc::ClientContext> context_;
  grpc::Status status_;
  int64_t intended_ = 0;
  int kind_ = 0;
  v1::CheckRequest check_;
  v1::CheckResponse check_response_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::CheckResponse>> check_rpc_;
  v1::BatchCheckRequest batch_;
  v1::BatchCheckResponse batch_response_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::BatchCheckResponse>> batch_rpc_;
  v1::SetPreferenceRequest set_;
  v1::SetPreferenceResponse set_response_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::SetPreferenceResponse>> set_rpc_;
  v1::BatchSetPreferencesRequest set_batch_;
  v1::BatchSetPreferencesResponse set_batch_response_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::BatchSetPreferencesResponse>> set_batch_rpc_;
  v1::BatchRecordNoticesRequest notices_;
  v1::BatchRecordNoticesResponse notices_response_;
  std::unique_ptr<grpc::ClientAsyncResponseReader<v1::BatchRecordNoticesResponse>> notices_rpc_;
  std::unique_ptr<grpc::ClientAsyncReaderWriter<v1::StreamCheckRequest, v1::StreamCheckResponse>>
      stream_;
  v1::StreamCheckRequest stream_request_;
  v1::StreamCheckResponse stream_response_;
  std::optional<int64_t> verify_user_;
  bool verify_objected_ = false;
  int64_t written_user_ = 0;
  bool objected_ = false;
};

int Load(Mode mode, const std::string& mode_name) {
  const int concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
  const int connections = std::max(1, absl::GetFlag(FLAGS_connections));
  const int threads = std::max(1, absl::GetFlag(FLAGS_threads));
  const int64_t users = absl::GetFlag(FLAGS_users);
  if (users <= 0) {
    std::cerr << "consent-bench: --users must be positive\n";
    return 2;
  }
  if (mode == Mode::kMixed && users < concurrency) {
    std::cerr << "consent-bench: mixed needs --users >= --concurrency\n";
    return 2;
  }
  UserPicker picker(users, absl::GetFlag(FLAGS_distribution) == "zipf");

  absl::StatusOr<ClientCredentials> flag_credentials = CredentialsFromFlags();
  if (!flag_credentials.ok()) {
    std::cerr << "consent-bench: " << flag_credentials.status().message() << "\n";
    return 2;
  }
  const ClientCredentials& credentials = *flag_credentials;
  auto channel_credentials = MakeChannelCredentials(credentials);
  if (!channel_credentials.ok()) {
    std::cerr << "consent-bench: " << channel_credentials.status().message() << "\n";
    return 2;
  }
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::ConsentRegistry::Stub>> stubs;
  for (int c = 0; c < connections; ++c) {
    grpc::ChannelArguments args;
    if (!credentials.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(credentials.tls_server_name);
    }
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per channel
    args.SetInt("consent_bench.connection", c);
    args.SetMaxReceiveMessageSize(64 << 20);
    channels.push_back(
        grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), *channel_credentials, args));
    if (!channels.back()->WaitForConnected(std::chrono::system_clock::now() +
                                           std::chrono::seconds(10))) {
      std::cerr << "consent-bench: cannot connect to " << absl::GetFlag(FLAGS_target) << "\n";
      return 1;
    }
    stubs.push_back(v1::ConsentRegistry::NewStub(channels.back()));
  }

  Run run;
  run.mode = mode;
  run.batch = std::max(1, absl::GetFlag(FLAGS_batch));
  run.read_ratio = absl::GetFlag(FLAGS_read_ratio);
  run.rate = absl::GetFlag(FLAGS_rate);
  run.concurrency = concurrency;
  run.picker = &picker;
  run.start = NowNanos();
  run.measure_from = run.start + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_warmup));
  run.measure_until = run.measure_from + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_duration));

  std::vector<std::unique_ptr<grpc::CompletionQueue>> queues;
  std::vector<Stats> stats(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) queues.push_back(std::make_unique<grpc::CompletionQueue>());
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < concurrency; ++i) {
    slots.push_back(std::make_unique<Slot>(
        &run, i, stubs[static_cast<size_t>(i % connections)].get(),
        queues[static_cast<size_t>(i % threads)].get(), &stats[static_cast<size_t>(i % threads)]));
  }
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&queues, t] {
      void* raw;
      bool ok;
      while (queues[static_cast<size_t>(t)]->Next(&raw, &ok)) {
        Tag* tag = static_cast<Tag*>(raw);
        tag->slot->OnEvent(tag->kind, ok);
      }
    });
  }
  // Measured from the start: a stall there counts as much as any.
  run.last_ok.store(run.measure_from);
  // Begin only starts calls; their completions run on the queue threads.
  for (auto& slot : slots) slot->Begin();
  std::this_thread::sleep_until(
      std::chrono::system_clock::time_point(std::chrono::nanoseconds(run.measure_until)));
  run.stopping.store(true);
  {
    // A stall at the end counts too.
    const int64_t gap = run.measure_until - run.last_ok.load();
    if (gap > run.longest_gap.load()) run.longest_gap.store(gap);
  }
  while (run.finished.load() < concurrency) std::this_thread::yield();
  for (auto& q : queues) q->Shutdown();
  for (auto& w : workers) w.join();

  Stats total;
  for (const Stats& s : stats) {
    total.latency.Merge(s.latency);
    total.calls += s.calls;
    total.decisions += s.decisions;
    total.violations += s.violations;
    for (const auto& [code, n] : s.errors) total.errors[code] += n;
  }
  const double seconds = absl::ToDoubleSeconds(absl::GetFlag(FLAGS_duration));
  auto us = [](int64_t ns) { return static_cast<double>(ns) / 1000.0; };
  std::vector<std::string> errors;
  int64_t error_count = 0;
  for (const auto& [code, n] : total.errors) {
    errors.push_back(absl::StrCat("\"", code, "\":", n));
    error_count += n;
  }
  std::cout << absl::StrCat(
                   "{\"mode\":\"", mode_name, "\",\"target\":\"", absl::GetFlag(FLAGS_target),
                   "\",\"concurrency\":", concurrency, ",\"connections\":", connections,
                   ",\"threads\":", threads, ",\"batch\":", run.batch, ",\"rate\":", run.rate,
                   ",\"distribution\":\"", absl::GetFlag(FLAGS_distribution),
                   "\",\"users\":", users, ",\"duration_s\":", seconds,
                   ",\"warmup_s\":", absl::ToDoubleSeconds(absl::GetFlag(FLAGS_warmup)),
                   ",\"calls\":", total.calls, ",\"decisions\":", total.decisions, ",\"errors\":{",
                   absl::StrJoin(errors, ","), "}",
                   ",\"read_your_writes_violations\":", total.violations,
                   ",\"calls_per_s\":", static_cast<double>(total.calls) / seconds,
                   ",\"decisions_per_s\":", static_cast<double>(total.decisions) / seconds,
                   ",\"latency_us\":{\"p50\":", us(total.latency.Quantile(0.5)),
                   ",\"p90\":", us(total.latency.Quantile(0.9)),
                   ",\"p99\":", us(total.latency.Quantile(0.99)),
                   ",\"p99.9\":", us(total.latency.Quantile(0.999)),
                   ",\"max\":", us(total.latency.max()), "}",
                   ",\"longest_gap_ms\":", static_cast<double>(run.longest_gap.load()) / 1e6, "}")
            << std::endl;
  std::cerr << mode_name << ": " << static_cast<int64_t>(static_cast<double>(total.calls) / seconds)
            << " calls/s, " << static_cast<int64_t>(static_cast<double>(total.decisions) / seconds)
            << " decisions/s, p50 " << us(total.latency.Quantile(0.5)) << " us, p99 "
            << us(total.latency.Quantile(0.99)) << " us, longest pause between answers "
            << static_cast<double>(run.longest_gap.load()) / 1e6 << " ms, " << error_count
            << " errors, " << total.violations << " read-your-writes violations\n";
  for (const std::string& v : run.violation_samples) std::cerr << "  violation: " << v << "\n";
  return error_count == 0 && total.violations == 0 ? 0 : 1;
}

// Fills a data directory offline: every subject a UK adult (so checks of
// public posts reach the preference and legal-basis rules), a fraction of
// them objecting to ai_training. Commits of 10,000 updates.
int Preload() {
  const std::string dir = absl::GetFlag(FLAGS_data_dir);
  const int64_t users = absl::GetFlag(FLAGS_users);
  const double objecting = absl::GetFlag(FLAGS_objecting);
  if (dir.empty() || users <= 0 || objecting < 0 || objecting > 1) {
    std::cerr << "consent-bench preload: needs --data_dir, --users > 0, --objecting in [0, 1]\n";
    return 2;
  }
  storage::StoreOptions options;
  options.data_dir = dir;
  auto store = storage::ConsentStore::Open(options);
  if (!store.ok()) {
    std::cerr << "consent-bench preload: " << store.status() << "\n";
    return 1;
  }
  const absl::Time started = absl::Now();
  constexpr int64_t kPerCommit = 10000;
  int64_t objected = 0;
  int last_percent = -1;
  for (int64_t first = 0; first < users; first += kPerCommit) {
    std::vector<storage::SubjectUpdate> updates;
    for (int64_t n = first; n < std::min(users, first + kPerCommit); ++n) {
      // Deterministic: subject n objects when the running share crosses n.
      const bool objects = std::floor(static_cast<double>(n + 1) * objecting) >
                           std::floor(static_cast<double>(n) * objecting);
      storage::SubjectUpdate attributes;
      attributes.user_id = UserId(n);
      attributes.apply = [](storage::UpdateContext&, v1::Subject& subject, v1::ChangeEvent& event) {
        v1::SubjectAttributes* a = subject.mutable_attributes();
        a->set_jurisdiction("GB");
        a->mutable_birth_date()->set_year(1980);
        a->mutable_birth_date()->set_month(1);
        a->mutable_birth_date()->set_day(1);
        a->set_account_state(v1::ACCOUNT_STATE_ACTIVE);
        *event.mutable_attributes()->mutable_after() = *a;
        event.set_kind(v1::CHANGE_KIND_SUBJECT_ATTRIBUTES);
        event.set_caller("consent-bench preload");
        return absl::OkStatus();
      };
      updates.push_back(std::move(attributes));
      if (objects) {
        // Its own event, as SetPreference would write it, so history (and
        // as_of answers) agree with the current record.
        storage::SubjectUpdate objection;
        objection.user_id = UserId(n);
        objection.apply = [](storage::UpdateContext& context, v1::Subject& subject,
                             v1::ChangeEvent& event) {
          v1::Preference* p = subject.add_preferences();
          p->set_purpose("ai_training");
          p->set_state(v1::PREFERENCE_STATE_OBJECTED);
          p->set_revision(context.revision());
          *p->mutable_update_time() = ToProto(context.time());
          event.mutable_preference()->set_purpose("ai_training");
          *event.mutable_preference()->mutable_after() = *p;
          event.set_kind(v1::CHANGE_KIND_PREFERENCE);
          event.set_caller("consent-bench preload");
          return absl::OkStatus();
        };
        updates.push_back(std::move(objection));
      }
      objected += objects ? 1 : 0;
    }
    auto result = (*store)->Commit(std::move(updates), absl::Now());
    if (!result.ok()) {
      std::cerr << "consent-bench preload: " << result.status() << "\n";
      return 1;
    }
    const int percent = static_cast<int>(100 * std::min(users, first + kPerCommit) / users);
    if (percent / 5 != last_percent / 5) {
      std::cerr << "preload: " << percent << "% (" << std::min(users, first + kPerCommit)
                << " subjects)\n";
      last_percent = percent;
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - started);
  std::cout << absl::StrCat("{\"mode\":\"preload\",\"data_dir\":\"", dir, "\",\"subjects\":", users,
                            ",\"objecting\":", objected, ",\"seconds\":", seconds,
                            ",\"subjects_per_s\":", static_cast<double>(users) / seconds, "}")
            << std::endl;
  return (*store)->Close().ok() ? 0 : 1;
}

// check-request: see the file comment.
int CheckRequestFrame() {
  v1::CheckRequest request;
  request.set_purpose("ai_training");
  const int64_t user = absl::GetFlag(FLAGS_users) / 2;
  SetUserId(user, request.mutable_user_id());
  FillContent(user, request.mutable_content());
  const std::string message = request.SerializeAsString();
  // The gRPC message frame: not compressed, then the length, big-endian.
  std::string frame(5, '\0');
  for (int i = 0; i < 4; ++i) {
    frame[1 + i] = static_cast<char>((message.size() >> (8 * (3 - i))) & 0xff);
  }
  frame += message;
  std::cout.write(frame.data(), static_cast<std::streamsize>(frame.size()));
  return std::cout.good() ? 0 : 1;
}

}  // namespace
}  // namespace consent::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "consent-bench [flags] unary|batch|stream|write|write-batch|notices|mixed|preload|"
      "check-request\n"
      "Load generator for consentd; see docs/performance.md.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::cerr << "consent-bench: give one mode (consent-bench --help)\n";
    return 2;
  }
  using consent::bench::Mode;
  const std::string mode = args[1];
  static const std::map<std::string, Mode> kModes = {{"unary", Mode::kUnary},
                                                     {"batch", Mode::kBatch},
                                                     {"stream", Mode::kStream},
                                                     {"write", Mode::kWrite},
                                                     {"write-batch", Mode::kWriteBatch},
                                                     {"notices", Mode::kNotices},
                                                     {"mixed", Mode::kMixed}};
  if (mode == "preload") return consent::bench::Preload();
  if (mode == "check-request") return consent::bench::CheckRequestFrame();
  auto it = kModes.find(mode);
  if (it == kModes.end()) {
    std::cerr << "consent-bench: unknown mode \"" << mode << "\"\n";
    return 2;
  }
  const std::string distribution = absl::GetFlag(FLAGS_distribution);
  if (distribution != "uniform" && distribution != "zipf") {
    std::cerr << "consent-bench: --distribution must be uniform or zipf\n";
    return 2;
  }
  return consent::bench::Load(it->second, mode);
}
