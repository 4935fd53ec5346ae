#include "registry_server.h"

#include <unistd.h>

#include <fstream>
#include <thread>

namespace ovbd::test {

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kRegistry[] = "/usr/bin/docker-registry";
constexpr char kHtpasswd[] = "/usr/bin/htpasswd";
constexpr char kPython[] = "/usr/bin/python3";
constexpr char kNginx[] = "/usr/sbin/nginx";
constexpr char kOpenssl[] = "/usr/bin/openssl";
// A server that has not come up within this is reported as failed.
constexpr auto kStartDeadline = std::chrono::seconds(15);
constexpr int kPortAttempts = 5;

Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) return Status::IOError("write " + path, EIO);
  return Status::OK();
}

// Waits until `ready()` or the process exits or the deadline passes.
// kBusy if it exited (a lost race for its port, typically), else an error
// with its log.
template <typename Ready>
Status WaitUntilUp(Subprocess* p, const Ready& ready, const std::string& what,
                   const std::string& log_path) {
  const auto deadline = Clock::now() + kStartDeadline;
  while (Clock::now() < deadline) {
    if (ready()) return Status::OK();
    if (!p->Running()) return Status::Busy(what + " exited: " + TailOfFile(log_path, 800));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::IOError(what + " did not come up in time: " + TailOfFile(log_path, 800), ETIMEDOUT);
}

}  // namespace

Status HaveProgram(const std::string& path, const std::string& package) {
  if (access(path.c_str(), X_OK) != 0) {
    return Status::NotSupported(path + " is not installed (Debian package " + package +
                                "; scripts/setup.sh installs it)");
  }
  return Status::OK();
}

// --- TokenServer ---

Result<std::unique_ptr<TokenServer>> TokenServer::Start(Options opts) {
  OVBD_RETURN_IF_ERROR(HaveProgram(kPython, "python3"));
  std::unique_ptr<TokenServer> t(new TokenServer(std::move(opts)));
  if (t->dir_.path().empty()) return Status::IOError("temp dir", EIO);
  t->cert_ = t->dir_.Sub("token.crt");
  // Its modules: a missing one is a skip, like a missing program.
  if (!RunCommand({kPython, "-c", "import cryptography"}, t->dir_.Sub("probe.log")).ok()) {
    return Status::NotSupported("python3-cryptography is not installed (scripts/setup.sh installs it)");
  }
  OVBD_RETURN_IF_ERROR(t->Launch(0));
  return t;
}

Status TokenServer::Launch(uint16_t port) {
  const std::string port_file = dir_.Sub("port");
  unlink(port_file.c_str());
  std::vector<std::string> argv = {kPython,      OVBD_TOKEN_SERVER_PY,
                                   "--port",     std::to_string(port),
                                   "--port-file", port_file,
                                   "--cert",     cert_,
                                   "--log",      dir_.Sub("issued"),
                                   "--user",     opts_.user,
                                   "--password", opts_.password,
                                   "--service",  opts_.service,
                                   "--issuer",   opts_.issuer,
                                   "--expires-in", std::to_string(opts_.expires_in)};
  if (!opts_.refresh_token.empty()) {
    argv.push_back("--refresh-token");
    argv.push_back(opts_.refresh_token);
  }
  const std::string log_path = dir_.Sub("token_server.log");
  OVBD_ASSIGN_OR_RETURN(proc_, Subprocess::Start(argv, log_path));
  uint16_t got = 0;
  OVBD_RETURN_IF_ERROR(WaitUntilUp(
      proc_.get(),
      [&] {
        std::ifstream f(port_file);
        int p = 0;
        if (!(f >> p) || p <= 0) return false;
        got = static_cast<uint16_t>(p);
        return HttpGetStatus(got, "/healthz") == 200;
      },
      "token server", log_path));
  port_ = got;
  return Status::OK();
}

TokenServer::~TokenServer() = default;

int TokenServer::TokensIssued() const {
  std::ifstream f(dir_.Sub("issued"));
  int n = 0;
  std::string line;
  while (std::getline(f, line)) ++n;
  return n;
}

Status TokenServer::RestartWithNewKey() {
  proc_->Stop();
  // The port was ours a moment ago; a server that lost it fails loudly.
  return Launch(port_);
}

// --- RegistryServer ---

Result<std::unique_ptr<RegistryServer>> RegistryServer::Start(Options opts) {
  OVBD_RETURN_IF_ERROR(HaveProgram(kRegistry, "docker-registry"));
  if (opts.auth == Auth::kBasic) OVBD_RETURN_IF_ERROR(HaveProgram(kHtpasswd, "apache2-utils"));
  if (opts.auth == Auth::kToken && opts.token_server == nullptr) {
    return Status::InvalidArgument("token auth needs a token server");
  }
  std::unique_ptr<RegistryServer> r(new RegistryServer(std::move(opts)));
  if (r->dir_.path().empty()) return Status::IOError("temp dir", EIO);
  if (r->opts_.auth == Auth::kBasic) {
    // bcrypt: the only hash distribution's htpasswd accepts.
    OVBD_RETURN_IF_ERROR(RunCommand({kHtpasswd, "-Bbc", r->dir_.Sub("htpasswd"), r->opts_.user,
                                     r->opts_.password},
                                    r->dir_.Sub("htpasswd.log")));
  }
  Status s;
  for (int i = 0; i < kPortAttempts; ++i) {
    OVBD_ASSIGN_OR_RETURN(r->port_, PickFreePort());
    s = r->Launch();
    if (s.code() != Status::Code::kBusy) break;
  }
  OVBD_RETURN_IF_ERROR(s);
  return r;
}

Status RegistryServer::Launch() {
  std::string cfg =
      "version: 0.1\n"
      "log:\n  level: info\n  accesslog:\n    disabled: false\n"
      "storage:\n"
      "  filesystem:\n    rootdirectory: " + dir_.Sub("data") + "\n"
      "  delete:\n    enabled: true\n"
      "http:\n"
      "  addr: 127.0.0.1:" + std::to_string(port_) + "\n"
      // Fixed, so upload sessions outlive a restart.
      "  secret: ovbd-test-upload-secret\n";
  if (opts_.auth == Auth::kBasic) {
    cfg += "auth:\n  htpasswd:\n    realm: ovbd-test\n    path: " + dir_.Sub("htpasswd") + "\n";
  } else if (opts_.auth == Auth::kToken) {
    const TokenServer& t = *opts_.token_server;
    cfg += "auth:\n  token:\n"
           "    realm: " + t.realm() + "\n"
           "    service: " + t.options().service + "\n"
           "    issuer: " + t.options().issuer + "\n"
           "    rootcertbundle: " + t.cert_path() + "\n";
  }
  const std::string config = dir_.Sub("config.yml");
  OVBD_RETURN_IF_ERROR(WriteText(config, cfg));
  const std::string log_path = dir_.Sub("registry.log");
  OVBD_ASSIGN_OR_RETURN(proc_, Subprocess::Start({kRegistry, "serve", config}, log_path));
  return WaitUntilUp(
      proc_.get(),
      [&] {
        int st = HttpGetStatus(port_, "/v2/");
        return st == 200 || st == 401;
      },
      "docker-registry", log_path);
}

RegistryServer::~RegistryServer() = default;

void RegistryServer::Stop() {
  if (proc_) proc_->Stop();
}

Status RegistryServer::Restart() {
  Stop();
  return Launch();
}

// --- TlsFront ---

Result<std::unique_ptr<TlsFront>> TlsFront::Start(uint16_t backend_port) {
  OVBD_RETURN_IF_ERROR(HaveProgram(kNginx, "nginx-light"));
  OVBD_RETURN_IF_ERROR(HaveProgram(kOpenssl, "openssl"));
  std::unique_ptr<TlsFront> t(new TlsFront());
  if (t->dir_.path().empty()) return Status::IOError("temp dir", EIO);
  const std::string& d = t->dir_.path();
  OVBD_RETURN_IF_ERROR(RunCommand(
      {kOpenssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
       "-keyout", d + "/key.pem", "-out", d + "/cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
       "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"},
      d + "/openssl.log"));
  Status s;
  for (int i = 0; i < kPortAttempts; ++i) {
    OVBD_ASSIGN_OR_RETURN(t->port_, PickFreePort());
    const std::string conf =
        "daemon off;\nmaster_process off;\nworker_processes 1;\n"
        "pid " + d + "/nginx.pid;\nerror_log " + d + "/nginx.log info;\n"
        "events { worker_connections 64; }\n"
        "http {\n"
        "  access_log " + d + "/access.log;\n"
        "  client_body_temp_path " + d + "/body;\n  proxy_temp_path " + d + "/proxy;\n"
        "  fastcgi_temp_path " + d + "/fastcgi;\n  uwsgi_temp_path " + d + "/uwsgi;\n"
        "  scgi_temp_path " + d + "/scgi;\n"
        "  server {\n"
        "    listen 127.0.0.1:" + std::to_string(t->port_) + " ssl;\n"
        "    ssl_certificate " + d + "/cert.pem;\n    ssl_certificate_key " + d + "/key.pem;\n"
        "    client_max_body_size 0;\n"
        "    location / {\n"
        "      proxy_pass http://127.0.0.1:" + std::to_string(backend_port) + ";\n"
        "      proxy_http_version 1.1;\n"
        "      proxy_set_header Connection \"\";\n"
        "      proxy_set_header Host $http_host;\n"
        "      proxy_set_header X-Forwarded-Proto https;\n"
        "      proxy_request_buffering off;\n      proxy_buffering off;\n"
        "    }\n"
        "  }\n"
        "}\n";
    OVBD_RETURN_IF_ERROR(WriteText(d + "/nginx.conf", conf));
    OVBD_ASSIGN_OR_RETURN(t->proc_, Subprocess::Start({kNginx, "-e", d + "/nginx.log", "-p", d, "-c",
                                                       d + "/nginx.conf"},
                                                      d + "/nginx.out"));
    const uint16_t port = t->port_;
    s = WaitUntilUp(t->proc_.get(), [&] { return PortOpen(port); }, "nginx", d + "/nginx.log");
    if (s.code() != Status::Code::kBusy) break;
  }
  OVBD_RETURN_IF_ERROR(s);
  return t;
}

TlsFront::~TlsFront() = default;

}  // namespace ovbd::test
