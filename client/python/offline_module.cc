// consent_registry._offline: consent_offline (client/offline) for Python,
// wrapped by consent_registry/offline.py, which is what users import.
// Errors: ValueError for what the caller gave (a bad file, key, event or
// argument), FileNotFoundError for a file that cannot be read.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/offline/offline_registry.h"
#include "core/proto_time.h"
#include "core/snapshot_signing.h"

namespace py = pybind11;

namespace consent::offline {
namespace {

[[noreturn]] void Raise(const absl::Status& status) {
  if (absl::IsNotFound(status)) {
    PyErr_SetString(PyExc_FileNotFoundError, std::string(status.message()).c_str());
    throw py::error_already_set();
  }
  throw py::value_error(std::string(status.message()));
}

// The public key: 32 raw bytes, or PEM text (str or bytes).
std::string PublicKey(const py::object& key) {
  std::string bytes =
      py::isinstance<py::str>(key) ? key.cast<std::string>() : std::string(key.cast<py::bytes>());
  if (bytes.size() == snapshot::kPublicKeySize) return bytes;
  absl::StatusOr<std::string> raw = snapshot::ParsePublicKeyPem(bytes);
  if (!raw.ok()) Raise(raw.status());
  return *raw;
}

absl::Time TimeOf(double unix_seconds) {
  return absl::FromUnixNanos(static_cast<int64_t>(std::llround(unix_seconds * 1e9)));
}

// Views of a column of ids: a list or tuple of str (or bytes), a numpy
// object array of them, or a numpy bytes array ('S' dtype). The views
// point into the Python objects, which `column` keeps alive; the GIL is
// held throughout, so nothing changes them meanwhile.
class IdColumn {
 public:
  IdColumn(const py::object& column, const char* name) {
    if (py::isinstance<py::array>(column)) {
      py::array array = column.cast<py::array>();
      if (array.ndim() != 1) throw py::value_error(absl::StrCat(name, ": a 1-d array, please"));
      if (array.dtype().kind() == 'S') {
        array_ = py::array::ensure(array, py::array::c_style);
        const char* data = static_cast<const char*>(array_.data());
        const size_t width = static_cast<size_t>(array_.itemsize());
        views_.reserve(static_cast<size_t>(array_.size()));
        for (py::ssize_t i = 0; i < array_.size(); ++i) {
          const char* item = data + static_cast<size_t>(i) * width;
          views_.emplace_back(item, strnlen(item, width));
        }
        return;
      }
      if (array.dtype().kind() != 'O') {
        throw py::value_error(absl::StrCat(
            name, ": a list of str, or a numpy array of dtype object or bytes ('S'); got dtype ",
            std::string(py::str(array.dtype()))));
      }
    }
    sequence_ = py::reinterpret_steal<py::object>(
        PySequence_Fast(column.ptr(), "user and content ids must be a sequence"));
    if (!sequence_) throw py::error_already_set();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(sequence_.ptr());
    PyObject** items = PySequence_Fast_ITEMS(sequence_.ptr());
    views_.reserve(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      Py_ssize_t size = 0;
      const char* data = nullptr;
      if (PyUnicode_Check(items[i])) {
        data = PyUnicode_AsUTF8AndSize(items[i], &size);
        if (data == nullptr) throw py::error_already_set();
      } else if (PyBytes_Check(items[i])) {
        char* raw = nullptr;
        PyBytes_AsStringAndSize(items[i], &raw, &size);
        data = raw;
      } else {
        throw py::value_error(absl::StrCat(name, "[", i, "] is not a str"));
      }
      views_.emplace_back(data, static_cast<size_t>(size));
    }
  }
  absl::Span<const absl::string_view> views() const { return views_; }

 private:
  py::object sequence_;
  py::array array_;
  std::vector<absl::string_view> views_;
};

// An int column: one value for every item, or one per item.
std::vector<int64_t> IntColumn(const py::object& value, size_t n, const char* name) {
  if (py::isinstance<py::int_>(value)) return {value.cast<int64_t>()};
  py::array_t<int64_t, py::array::c_style | py::array::forcecast> array =
      py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(value);
  if (!array || array.ndim() != 1 || static_cast<size_t>(array.size()) != n) {
    throw py::value_error(absl::StrCat(name, ": an int, or one per user id"));
  }
  return std::vector<int64_t>(array.data(), array.data() + n);
}

class PySnapshot {
 public:
  PySnapshot(const std::string& path, const py::object& public_key) {
    absl::StatusOr<std::unique_ptr<OfflineRegistry>> loaded =
        OfflineRegistry::Load(path, PublicKey(public_key));
    if (!loaded.ok()) Raise(loaded.status());
    registry_ = *std::move(loaded);
  }

  int64_t revision() const { return registry_->revision(); }
  int64_t subjects() const { return registry_->info().subjects; }
  int64_t exclusions() const { return registry_->info().exclusions; }
  bool pseudonymized() const { return registry_->info().pseudonymized; }
  double create_time() const {
    return absl::ToDoubleSeconds(registry_->info().create_time - absl::UnixEpoch());
  }
  std::string policy_version() const { return registry_->policy()->version(); }
  std::string policy_text() const { return registry_->policy()->text(); }
  size_t changed_subjects() const { return registry_->changed_subjects(); }

  void Apply(const py::bytes& serialized) {
    v1::ChangeEvent event;
    const std::string bytes = serialized;
    if (!event.ParseFromString(bytes)) throw py::value_error("not a serialized ChangeEvent");
    if (absl::Status s = registry_->Apply(event); !s.ok()) Raise(s);
  }
  void Advance(int64_t revision) {
    if (absl::Status s = registry_->Advance(revision); !s.ok()) Raise(s);
  }
  void SetPolicy(const std::string& text) {
    if (absl::Status s = registry_->SetPolicy(text); !s.ok()) Raise(s);
  }

  // (allowed, reason, policy_version, revision).
  py::tuple Check(const std::string& purpose, const std::string& user_id,
                  const std::string& content_id, int content_type, int visibility,
                  const py::object& create_time, const std::vector<int>& sensitive,
                  const py::object& at) const {
    v1::CheckRequest request;
    request.set_purpose(purpose);
    request.set_user_id(user_id);
    v1::Content* content = request.mutable_content();
    content->set_content_id(content_id);
    content->set_content_type(static_cast<v1::ContentType>(content_type));
    content->set_visibility(static_cast<v1::Visibility>(visibility));
    if (!create_time.is_none()) {
      *content->mutable_create_time() = ToProto(TimeOf(create_time.cast<double>()));
    }
    for (int c : sensitive)
      content->add_sensitive_categories(static_cast<v1::SensitiveCategory>(c));
    v1::Decision decision;
    const absl::Time when = at.is_none() ? absl::Now() : TimeOf(at.cast<double>());
    if (absl::Status s = registry_->Check(request, when, &decision); !s.ok()) Raise(s);
    return py::make_tuple(decision.allowed(), static_cast<int>(decision.reason()),
                          decision.policy_version(), decision.revision());
  }

  // (allowed: bool array, reasons: int32 array).
  py::tuple CheckMany(const std::string& purpose, const py::object& user_ids,
                      const py::object& content_ids, const py::object& content_type,
                      const py::object& visibility, const py::object& create_times,
                      const std::vector<int>& sensitive, const py::object& at) const {
    const IdColumn users(user_ids, "user_ids");
    const size_t n = users.views().size();
    std::unique_ptr<IdColumn> contents_ids;
    if (!content_ids.is_none()) {
      contents_ids = std::make_unique<IdColumn>(content_ids, "content_ids");
      if (contents_ids->views().size() != n) {
        throw py::value_error(
            absl::StrCat("content_ids: ", contents_ids->views().size(), " for ", n, " user ids"));
      }
    }
    const std::vector<int64_t> types = IntColumn(content_type, n, "content_type");
    const std::vector<int64_t> visibilities = IntColumn(visibility, n, "visibility");
    std::vector<double> times;
    if (!create_times.is_none()) {
      if (py::isinstance<py::float_>(create_times) || py::isinstance<py::int_>(create_times)) {
        times.push_back(create_times.cast<double>());
      } else {
        auto array =
            py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(create_times);
        if (!array || array.ndim() != 1 || static_cast<size_t>(array.size()) != n) {
          throw py::value_error("create_times: a number, or one per user id (NaN: unknown)");
        }
        times.assign(array.data(), array.data() + n);
      }
    }
    // One content for every item unless a column varies by item.
    const size_t contents_size =
        (types.size() == 1 && visibilities.size() == 1 && times.size() <= 1) ? 1 : n;
    std::vector<v1::Content> contents(std::max<size_t>(contents_size, 1));
    for (size_t i = 0; i < contents.size(); ++i) {
      v1::Content& c = contents[i];
      c.set_content_type(static_cast<v1::ContentType>(types[types.size() == 1 ? 0 : i]));
      c.set_visibility(static_cast<v1::Visibility>(visibilities[visibilities.size() == 1 ? 0 : i]));
      if (!times.empty()) {
        const double t = times[times.size() == 1 ? 0 : i];
        if (!std::isnan(t)) *c.mutable_create_time() = ToProto(TimeOf(t));
      }
      for (int s : sensitive) c.add_sensitive_categories(static_cast<v1::SensitiveCategory>(s));
    }
    const absl::Time when = at.is_none() ? absl::Now() : TimeOf(at.cast<double>());
    std::vector<OfflineDecision> decisions(n);
    const absl::Span<const absl::string_view> no_ids;
    if (absl::Status s = registry_->CheckMany(purpose, users.views(),
                                              contents_ids ? contents_ids->views() : no_ids,
                                              contents, when, decisions.data());
        !s.ok()) {
      Raise(s);
    }
    py::array_t<bool> allowed(static_cast<py::ssize_t>(n));
    py::array_t<int32_t> reasons(static_cast<py::ssize_t>(n));
    bool* a = allowed.mutable_data();
    int32_t* r = reasons.mutable_data();
    for (size_t i = 0; i < n; ++i) {
      a[i] = decisions[i].allowed;
      r[i] = static_cast<int32_t>(decisions[i].reason);
    }
    return py::make_tuple(allowed, reasons);
  }

 private:
  std::unique_ptr<OfflineRegistry> registry_;
};

}  // namespace
}  // namespace consent::offline

PYBIND11_MODULE(_offline, m) {
  using consent::offline::PySnapshot;
  m.doc() = "consent_offline for Python: use consent_registry.offline";
  py::class_<PySnapshot>(m, "Snapshot")
      .def(py::init<const std::string&, const py::object&>(), py::arg("path"),
           py::arg("public_key"))
      .def_property_readonly("revision", &PySnapshot::revision)
      .def_property_readonly("subjects", &PySnapshot::subjects)
      .def_property_readonly("exclusions", &PySnapshot::exclusions)
      .def_property_readonly("pseudonymized", &PySnapshot::pseudonymized)
      .def_property_readonly("create_time", &PySnapshot::create_time)
      .def_property_readonly("policy_version", &PySnapshot::policy_version)
      .def_property_readonly("policy_text", &PySnapshot::policy_text)
      .def_property_readonly("changed_subjects", &PySnapshot::changed_subjects)
      .def("apply", &PySnapshot::Apply)
      .def("advance", &PySnapshot::Advance)
      .def("set_policy", &PySnapshot::SetPolicy)
      .def("check", &PySnapshot::Check)
      .def("check_many", &PySnapshot::CheckMany);
}
