#include "registry_errors.h"

#include <nlohmann/json.hpp>

namespace ovbd::remote {

namespace {

constexpr size_t kMaxErrorBody = 64 << 10;
constexpr size_t kMaxShown = 200;

std::string Shown(const std::string& s) {
  std::string out = s.substr(0, kMaxShown);
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return out;
}

// The distribution API's error body: {"errors":[{"code":..,"message":..}]}.
std::string RegistrySays(const ClientResponse& resp) {
  if (resp.body.empty() || resp.body.size() > kMaxErrorBody) return "";
  auto j = nlohmann::json::parse(resp.body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return "";
  auto errors = j.find("errors");
  if (errors == j.end() || !errors->is_array() || errors->empty()) return "";
  const auto& e = (*errors)[0];
  if (!e.is_object()) return "";
  std::string out;
  if (auto c = e.find("code"); c != e.end() && c->is_string()) out = Shown(c->get<std::string>());
  if (auto m = e.find("message"); m != e.end() && m->is_string()) {
    if (!out.empty()) out += ": ";
    out += Shown(m->get<std::string>());
  }
  return out;
}

}  // namespace

Status ResponseError(const std::string& what, const ClientResponse& resp) {
  const int st = resp.status;
  std::string msg = what + ": the server answered " + std::to_string(st);
  if (std::string says = RegistrySays(resp); !says.empty()) msg += " (" + says + ")";
  if (st == 400) return Status::InvalidArgument(msg + ": the request was refused");
  if (st == 401) return Status::IOError(msg + ": authentication failed", EACCES);
  if (st == 403) return Status::IOError(msg + ": access denied", EACCES);
  if (st == 404) return Status::NotFound(msg + ": not found");
  if (st == 405) return Status::IOError(msg + ": not allowed by this registry", EPERM);
  if (st == 416) return Status::IOError(msg + ": range not satisfiable", EINVAL);
  if (st == 429) return Status::IOError(msg + ": too many requests", EAGAIN);
  if (st >= 500 && st <= 599) return Status::IOError(msg, EIO);
  return Status::IOError(msg + ": unexpected", EPROTO);
}

bool Retryable(const Status& s) {
  if (s.ok() || s.code() == Status::Code::kInvalidArgument) return false;
  switch (s.os_errno()) {
    case EACCES:
    case EPERM:
    case ELOOP:
    case EMSGSIZE:
    case EINVAL:
    case ENOENT:  // a CA file that is not there
      return false;
    default:
      return true;
  }
}

bool Retryable(const ClientResponse& resp) {
  return resp.status == 429 || (resp.status >= 500 && resp.status <= 599);
}

}  // namespace ovbd::remote
