// Proves that the ThreadSanitizer build sees what it is trusted to see, with
// the same flags, ignore list and suppressions as the tests it checks:
//
//   tsan_canary race   two threads write one int unguarded: must be reported
//   tsan_canary mutex  the same under an absl::Mutex, handed over through
//                      absl::Notification and a CondVar: must not be (Debian's
//                      uninstrumented abseil would report it)
//   tsan_canary grpc   two calls of a gRPC callback handler write one int
//                      unguarded while both are in flight: must be reported
//                      (the handlers run on gRPC's threads, whose code is
//                      ignored; the project's handler code must not be)
//   tsan_canary order  two absl::Mutexes taken in one order by one thread,
//                      then in the other by another (never at the same
//                      time, so nothing deadlocks): the lock-order
//                      inversion must be reported
//
// ctest expects a report from race, grpc and order, and a clean exit from
// mutex (TSan exits 66 after a report).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace {

int Race() {
  int shared = 0;
  std::thread a([&shared] { shared += 1; });
  std::thread b([&shared] { shared += 2; });
  a.join();
  b.join();
  return shared == 3 ? 0 : 1;
}

int Mutex() {
  absl::Mutex mu;
  absl::CondVar cv;
  int shared = 0;
  bool ready = false;
  absl::Notification start;
  std::thread a([&] {
    start.WaitForNotification();
    absl::MutexLock lock(&mu);
    shared += 1;
    ready = true;
    cv.Signal();
  });
  std::thread b([&] {
    absl::MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    shared += 2;
  });
  start.Notify();
  a.join();
  b.join();
  return shared == 3 ? 0 : 1;
}

int LockOrder() {
  absl::Mutex first;
  absl::Mutex second;
  std::thread a([&] {
    absl::MutexLock outer(&first);
    absl::MutexLock inner(&second);
  });
  a.join();
  std::thread b([&] {
    absl::MutexLock outer(&second);
    absl::MutexLock inner(&first);
  });
  b.join();
  return 0;
}

// Health.Check with an unguarded counter; each call waits (on a relaxed
// atomic, which orders nothing for TSan) until two calls are inside.
class RacyHealth final : public grpc::health::v1::Health::CallbackService {
 public:
  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const grpc::health::v1::HealthCheckRequest*,
                                  grpc::health::v1::HealthCheckResponse* response) override {
    ++unguarded_calls_;
    inside_.fetch_add(1, std::memory_order_relaxed);
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (inside_.load(std::memory_order_relaxed) < 2 && absl::Now() < deadline) {
      std::this_thread::yield();
    }
    response->set_status(grpc::health::v1::HealthCheckResponse::SERVING);
    auto* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  int unguarded_calls_ = 0;
  std::atomic<int> inside_{0};
};

int Grpc() {
  RacyHealth service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "tsan_canary: the server did not start\n");
    return 2;
  }
  auto channel =
      grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  std::vector<std::thread> callers;
  std::atomic<int> failed{0};
  for (int i = 0; i < 2; ++i) {
    callers.emplace_back([&stub, &failed] {
      grpc::ClientContext context;
      grpc::health::v1::HealthCheckRequest request;
      grpc::health::v1::HealthCheckResponse response;
      if (!stub->Check(&context, request, &response).ok()) failed.fetch_add(1);
    });
  }
  for (auto& caller : callers) caller.join();
  server->Shutdown();
  return failed.load() == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "race") return Race();
  if (mode == "mutex") return Mutex();
  if (mode == "grpc") return Grpc();
  if (mode == "order") return LockOrder();
  std::fprintf(stderr, "usage: tsan_canary race|mutex|grpc|order\n");
  return 2;
}
