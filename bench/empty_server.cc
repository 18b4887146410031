// consent-empty-server: the gRPC floor for checks on this machine. The same
// server set-up as consentd (malloc's thresholds; Check on the callback API; BatchCheck on the
// callback API's raw form, its request parsed onto an arena and its
// response written by hand; StreamCheck synchronous, raw the same way, each
// message on an arena; health checking and reflection on; the same message size limit
// and threads), but Check, BatchCheck and StreamCheck answer a fixed
// decision per item at once: no validation, storage or rules, only the
// messages' own parsing and serialization. consent-bench run against it
// and against consentd in the same session gives the share of a check's
// cost that is gRPC and protobuf itself (docs/performance.md). Writes
// likewise: SetPreference and BatchSetPreferences (callback API, as
// consentd serves them) answer as consentd does, a revision and the
// stored preference, while writing nothing: the framework's ceiling for
// writes.
//
// --answer_writes=deferred gives each write's answer from another
// thread, as any synced write must be answered: the thread that received
// it cannot wait for the disk. Calls are handed to one answering thread,
// which finishes every call queued since its last turn: the framework's
// ceiling for writes answered after a hand-off (docs/performance.md,
// "What bounds a synced write").
//
// --api=cq serves Check and BatchCheck on gRPC's asynchronous
// completion-queue API instead (--cq_threads threads, each polling its own
// queue), the same messages and the same work otherwise: the comparison of
// the two server APIs for the hot path (docs/performance.md, "The server
// API: callback or completion queue").
#include <atomic>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "consent/v1/registry.grpc.pb.h"
#include "core/proto_time.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/reflection.h"
#include "server/registry_service.h"
#include "server/server.h"
#include "server/wire.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "host:port; port 0 picks a free port.");
ABSL_FLAG(std::string, api, "callback",
          "callback (as consentd) or cq: Check and BatchCheck on the completion-queue API.");
ABSL_FLAG(std::string, answer_writes, "inline",
          "inline (on the thread that received the write) or deferred (from another thread).");
ABSL_FLAG(int64_t, malloc_retain_mib, consent::kMaxMallocRetainMib,
          "As consentd's flag: freed memory malloc keeps for reuse, in MiB (0: glibc's defaults).");
ABSL_FLAG(int, cq_threads, 2, "With --api=cq: threads, each polling its own completion queue.");

namespace {

namespace v1 = consent::v1;

constexpr char kVersion[] = "empty";
// The revision every batch answer carries, as consentd's do.
constexpr int64_t kRevision = 1'000'000;
// With --api=cq: calls of each method each queue waits for, so a burst of
// arrivals does not wait for the next request to be posted.
constexpr int kCallsWaitingPerQueue = 32;

void FixedDecision(v1::Decision* decision) {
  decision->set_allowed(true);
  decision->set_reason(v1::DECISION_REASON_ALLOWED_DEFAULT);
  decision->set_policy_version(kVersion);
}

// A fixed decision per item of a raw BatchCheckRequest, as consentd parses
// and answers one.
grpc::Status AnswerBatch(const grpc::ByteBuffer& request, grpc::ByteBuffer* response) {
  google::protobuf::Arena arena(consent::BatchArenaOptions());
  const v1::BatchCheckRequest* message = consent::ParseBatchCheck(request, &arena);
  if (message == nullptr) return consent::BadBatchCheckRequest();
  consent::EncodedDecisions decisions;
  decisions.Reserve(message->items_size(), kVersion);
  for (int i = 0; i < message->items_size(); ++i) {
    decisions.Add(consent::Verdict{v1::DECISION_REASON_ALLOWED_DEFAULT, 10}, 0);
  }
  decisions.Finish(kRevision);
  consent::SetResponseBytes(decisions.bytes(), response);
  return grpc::Status::OK;
}

// A fixed decision per item of each raw StreamCheck message, as consentd
// parses and answers them.
grpc::Status AnswerStream(grpc::ServerContext*, consent::RawCheckStream* stream) {
  consent::StreamArena messages;
  grpc::ByteBuffer in, out;
  int64_t index = 0;
  while (stream->Read(&in)) {
    const v1::BatchCheckRequest* message = consent::ParseBatchCheck(in, messages.Next());
    if (message == nullptr) return consent::BadStreamCheckMessage(index);
    consent::EncodedDecisions decisions;
    decisions.Reserve(message->items_size(), kVersion);
    for (int i = 0; i < message->items_size(); ++i) {
      decisions.Add(consent::Verdict{v1::DECISION_REASON_ALLOWED_DEFAULT, 10}, 0);
    }
    decisions.Finish(kRevision);
    consent::SetResponseBytes(decisions.bytes(), &out);
    if (!stream->Write(out)) break;
    ++index;
  }
  return grpc::Status::OK;
}

// The answer consentd gives a write of `request` at `revision`: the
// stored preference, none after CLEARED.
void AnswerWrite(const v1::SetPreferenceRequest& request, int64_t revision,
                 v1::SetPreferenceResponse* response) {
  response->set_revision(revision);
  if (request.state() == v1::PREFERENCE_STATE_CLEARED) return;
  v1::Preference* preference = response->mutable_preference();
  preference->set_purpose(request.purpose());
  preference->set_state(request.state());
  if (request.has_effective_time())
    *preference->mutable_effective_time() = request.effective_time();
  if (request.has_expire_time()) *preference->mutable_expire_time() = request.expire_time();
  if (request.has_source()) *preference->mutable_source() = request.source();
  preference->set_revision(revision);
  *preference->mutable_update_time() = consent::ToProto(absl::Now());
}

// --answer_writes=deferred: the thread that finishes the calls handed to
// it. Thread safe.
class DeferredAnswers {
 public:
  DeferredAnswers() : thread_([this] { Run(); }) {}
  ~DeferredAnswers() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    thread_.join();
  }
  void Add(grpc::ServerUnaryReactor* reactor) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(reactor);
  }

 private:
  void Run() {
    for (;;) {
      std::vector<grpc::ServerUnaryReactor*> answers;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || !queue_.empty();
        };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;
        answers.swap(queue_);
      }
      for (grpc::ServerUnaryReactor* reactor : answers) reactor->Finish(grpc::Status::OK);
    }
  }

  absl::Mutex mu_;
  std::vector<grpc::ServerUnaryReactor*> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

class EmptyRegistry final : public v1::ConsentRegistry::WithCallbackMethod_SetPreference<
                                v1::ConsentRegistry::WithCallbackMethod_BatchSetPreferences<
                                    v1::ConsentRegistry::WithCallbackMethod_Check<
                                        v1::ConsentRegistry::WithRawCallbackMethod_BatchCheck<
                                            v1::ConsentRegistry::Service>>>> {
 public:
  // Writes are answered by `deferred` when it is not null.
  explicit EmptyRegistry(DeferredAnswers* deferred) : deferred_(deferred) {
    MarkMethodStreamed(consent::StreamCheckMethodIndex(),
                       consent::NewRawStreamCheckHandler(this, AnswerStream));
  }

  grpc::ServerUnaryReactor* SetPreference(grpc::CallbackServerContext* context,
                                          const v1::SetPreferenceRequest* request,
                                          v1::SetPreferenceResponse* response) override {
    AnswerWrite(*request, revision_.fetch_add(1, std::memory_order_relaxed) + 1, response);
    return FinishWrite(context);
  }

  grpc::ServerUnaryReactor* BatchSetPreferences(
      grpc::CallbackServerContext* context, const v1::BatchSetPreferencesRequest* request,
      v1::BatchSetPreferencesResponse* response) override {
    const int64_t n = request->requests_size();
    const int64_t first = revision_.fetch_add(n, std::memory_order_relaxed) + 1;
    response->mutable_revisions()->Reserve(static_cast<int>(n));
    for (int64_t i = 0; i < n; ++i) response->add_revisions(first + i);
    response->set_revision(first + n - 1);
    return FinishWrite(context);
  }

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context, const v1::CheckRequest*,
                                  v1::CheckResponse* response) override {
    FixedDecision(response->mutable_decision());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* BatchCheck(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(AnswerBatch(*request, response));
    return reactor;
  }

 private:
  grpc::ServerUnaryReactor* FinishWrite(grpc::CallbackServerContext* context) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (deferred_ != nullptr) {
      deferred_->Add(reactor);
    } else {
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

  DeferredAnswers* const deferred_;
  std::atomic<int64_t> revision_{kRevision};
};

// --api=cq: Check and BatchCheck requested on completion queues.
class CqEmptyRegistry final
    : public v1::ConsentRegistry::WithAsyncMethod_Check<
          v1::ConsentRegistry::WithRawMethod_BatchCheck<v1::ConsentRegistry::Service>> {
 public:
  CqEmptyRegistry() {
    MarkMethodStreamed(consent::StreamCheckMethodIndex(),
                       consent::NewRawStreamCheckHandler(this, AnswerStream));
  }
};

// A call on a completion queue; its tag is the call itself, and the
// polling thread runs Proceed each time the tag comes back.
class CqCall {
 public:
  virtual ~CqCall() = default;
  virtual void Proceed(bool ok) = 0;
};

// One unary call, from its arrival to its answer: `request_method` asks
// the service for the next call, `answer` computes its answer. Each call
// posts its successor when it arrives, so the queue always has calls
// waiting; it deletes itself once answered.
template <typename Request, typename Response>
class CqUnaryCall final : public CqCall {
 public:
  using RequestMethod = void (CqEmptyRegistry::*)(grpc::ServerContext*, Request*,
                                                  grpc::ServerAsyncResponseWriter<Response>*,
                                                  grpc::CompletionQueue*,
                                                  grpc::ServerCompletionQueue*, void*);
  using Answer = grpc::Status (*)(const Request&, Response*);

  CqUnaryCall(CqEmptyRegistry* service, grpc::ServerCompletionQueue* queue,
              RequestMethod request_method, Answer answer)
      : service_(service),
        queue_(queue),
        request_method_(request_method),
        answer_(answer),
        responder_(&context_) {
    (service_->*request_method_)(&context_, &request_, &responder_, queue_, queue_, this);
  }

  void Proceed(bool ok) override {
    if (answered_ || !ok) {  // answered, or the queue shuts down
      delete this;
      return;
    }
    answered_ = true;
    new CqUnaryCall(service_, queue_, request_method_, answer_);
    grpc::Status status = answer_(request_, &response_);
    if (status.ok()) {
      responder_.Finish(response_, status, this);
    } else {
      responder_.FinishWithError(status, this);
    }
  }

 private:
  CqEmptyRegistry* service_;
  grpc::ServerCompletionQueue* queue_;
  RequestMethod request_method_;
  Answer answer_;
  grpc::ServerContext context_;
  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_;
  bool answered_ = false;
};

grpc::Status AnswerCheck(const v1::CheckRequest&, v1::CheckResponse* response) {
  FixedDecision(response->mutable_decision());
  return grpc::Status::OK;
}

void PollQueue(CqEmptyRegistry* service, grpc::ServerCompletionQueue* queue) {
  for (int i = 0; i < kCallsWaitingPerQueue; ++i) {
    new CqUnaryCall<v1::CheckRequest, v1::CheckResponse>(
        service, queue, &CqEmptyRegistry::RequestCheck, AnswerCheck);
    new CqUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        service, queue, &CqEmptyRegistry::RequestBatchCheck, AnswerBatch);
  }
  void* tag = nullptr;
  bool ok = false;
  while (queue->Next(&tag, &ok)) static_cast<CqCall*>(tag)->Proceed(ok);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);  // as consentd
  const std::string api = absl::GetFlag(FLAGS_api);
  const int cq_threads = absl::GetFlag(FLAGS_cq_threads);
  if (api != "callback" && api != "cq") {
    std::cerr << "consent-empty-server: --api must be callback or cq, not \"" << api << "\"\n";
    return 2;
  }
  const std::string answer_writes = absl::GetFlag(FLAGS_answer_writes);
  if (answer_writes != "inline" && answer_writes != "deferred") {
    std::cerr << "consent-empty-server: --answer_writes must be inline or deferred, not \""
              << answer_writes << "\"\n";
    return 2;
  }
  if (absl::Status s = consent::RetainFreedMemory(absl::GetFlag(FLAGS_malloc_retain_mib));
      !s.ok()) {
    std::cerr << "consent-empty-server: " << s.message() << "\n";
    if (absl::IsInvalidArgument(s)) return 2;
  }
  if (cq_threads < 1 || cq_threads > 256) {
    std::cerr << "consent-empty-server: --cq_threads must be 1 to 256, not " << cq_threads << "\n";
    return 2;
  }
  std::unique_ptr<DeferredAnswers> deferred;
  if (answer_writes == "deferred") deferred = std::make_unique<DeferredAnswers>();
  EmptyRegistry callback_service(deferred.get());
  CqEmptyRegistry cq_service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  consent::ConfigureServerBuilder(consent::ServerOptions(), &builder);
  consent::ReflectionService reflection(
      {v1::ConsentRegistry::service_full_name(), "grpc.health.v1.Health",
       grpc::reflection::v1alpha::ServerReflection::service_full_name()},
      /*auth=*/nullptr);
  builder.RegisterService(&reflection);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> queues;
  if (api == "cq") {
    builder.RegisterService(&cq_service);
    for (int i = 0; i < cq_threads; ++i) queues.push_back(builder.AddCompletionQueue());
  } else {
    builder.RegisterService(&callback_service);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "consent-empty-server: cannot listen on " << listen << "\n";
    return 1;
  }
  std::vector<std::thread> pollers;
  for (auto& queue : queues) pollers.emplace_back(PollQueue, &cq_service, queue.get());
  std::cout << "consentd listening on " << listen.substr(0, listen.rfind(':')) << ":" << port
            << std::endl;
  server->Wait();
  for (auto& queue : queues) queue->Shutdown();
  for (auto& poller : pollers) poller.join();
}
