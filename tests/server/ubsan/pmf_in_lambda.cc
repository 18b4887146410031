// GCC 12's -fsanitize=vptr and a pointer-to-member call inside a lambda
// (server/registry_service.cc, ServeWrite). A polymorphic service calls a
// member function of another object through a pointer to member, inside a
// lambda: as (registry_->*write)(...) GCC's instrumentation checks the
// wrong pointer and reports a valid object as "not of type
// RegistryService"; through a local copy of the pointer it is clean.
// Built twice by ubsan_pmf_test.sh: -DREACH_THROUGH_THIS (the report is
// expected) and without (no report).
#include <cstdio>
#include <string>

struct Request {
  std::string id;
};
struct Response {
  long revision = 0;
};

class Registry {
 public:
  void SetPreference(const Request&, Response* response) { response->revision = 1; }
};

class ServiceBase {
 public:
  virtual ~ServiceBase() = default;
  virtual long SetPreference(const Request& request, Response* response) = 0;
};

template <typename Handler>
long Serve(Handler&& handler) {
  return handler();
}

class RegistryService final : public ServiceBase {
 public:
  explicit RegistryService(Registry* registry) : registry_(registry) {}
  long SetPreference(const Request& request, Response* response) override {
    return ServeWrite(&Registry::SetPreference, request, response);
  }

 private:
  using WriteMethod = void (Registry::*)(const Request&, Response*);
  long ServeWrite(WriteMethod write, const Request& request, Response* response) {
#ifdef REACH_THROUGH_THIS
    return Serve([&] {
      (registry_->*write)(request, response);
      return response->revision;
    });
#else
    Registry* const registry = registry_;
    return Serve([&] {
      (registry->*write)(request, response);
      return response->revision;
    });
#endif
  }
  Registry* registry_;
};

int main() {
  Registry registry;
  RegistryService service(&registry);
  ServiceBase* base = &service;
  Response response;
  const long revision = base->SetPreference(Request{"r"}, &response);
  std::printf("revision %ld\n", revision);
  return revision == 1 ? 0 : 1;
}
