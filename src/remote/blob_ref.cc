#include "ovbd/remote/blob_ref.h"

#include <cctype>

#include "ovbd/io/http_client.h"

namespace ovbd::remote {

namespace {

constexpr size_t kMaxRepoLength = 255;
constexpr size_t kMaxTagLength = 128;

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// One path component of a repository name: [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
bool ValidComponent(std::string_view c) {
  if (c.empty() || !IsLowerAlnum(c.front()) || !IsLowerAlnum(c.back())) return false;
  for (size_t i = 0; i < c.size();) {
    if (IsLowerAlnum(c[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < c.size() && !IsLowerAlnum(c[j])) ++j;
    std::string_view sep = c.substr(i, j - i);
    const bool ok = sep == "." || sep == "_" || sep == "__" ||
                    sep.find_first_not_of('-') == std::string_view::npos;
    if (!ok) return false;
    i = j;
  }
  return true;
}

Status ValidateRepo(std::string_view repo) {
  if (repo.empty() || repo.size() > kMaxRepoLength) {
    return Status::InvalidArgument("repository name must be 1 to 255 characters");
  }
  size_t start = 0;
  for (;;) {
    size_t slash = repo.find('/', start);
    std::string_view c = repo.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (!ValidComponent(c)) {
      return Status::InvalidArgument("bad repository name '" + std::string(repo) +
                                     "': components are lowercase letters and digits, "
                                     "separated by '.', '_', '__' or '-'");
    }
    if (slash == std::string_view::npos) return Status::OK();
    start = slash + 1;
  }
}

Status ValidateTag(std::string_view tag) {
  bool ok = !tag.empty() && tag.size() <= kMaxTagLength && tag.front() != '.' && tag.front() != '-';
  for (char c : tag) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-');
  }
  if (!ok) {
    return Status::InvalidArgument("bad tag '" + std::string(tag) +
                                   "': [A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
  }
  return Status::OK();
}

// HOST[:PORT] as the registry part of an address: checked by parsing it as
// the authority of a URL (same rules: no user info, a valid port).
Status ValidateRegistry(std::string_view reg) {
  if (reg.empty()) return Status::InvalidArgument("registry address has no host");
  auto u = Url::Parse("https://" + std::string(reg) + "/");
  if (!u.ok()) return Status::InvalidArgument("bad registry host '" + std::string(reg) + "'");
  return Status::OK();
}

constexpr std::string_view kScheme = "registry://";

// Splits "registry://HOST[:PORT]/REST" into host and rest.
Status SplitRegistry(std::string_view text, std::string* reg, std::string_view* rest) {
  if (text.substr(0, kScheme.size()) != kScheme) {
    return Status::InvalidArgument("'" + std::string(text) + "' is not a registry:// address");
  }
  text.remove_prefix(kScheme.size());
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return Status::InvalidArgument("registry address needs a repository: registry://HOST[:PORT]/REPO");
  }
  *reg = std::string(text.substr(0, slash));
  *rest = text.substr(slash + 1);
  return ValidateRegistry(*reg);
}

// Splits `text` at `pos` into what comes before it and the digest after it;
// pos npos (no separator) is the error `missing`.
Status SplitAtDigest(std::string_view text, size_t pos, const char* missing, std::string* before,
                     std::string* digest) {
  if (pos == std::string_view::npos) return Status::InvalidArgument(missing);
  *before = std::string(text.substr(0, pos));
  *digest = std::string(text.substr(pos + 1));
  return Status::OK();
}

}  // namespace

Status ValidateDigest(std::string_view digest) {
  constexpr std::string_view kAlg = "sha256:";
  bool ok = digest.size() == kAlg.size() + 64 && digest.substr(0, kAlg.size()) == kAlg;
  for (size_t i = kAlg.size(); ok && i < digest.size(); ++i) {
    char c = digest[i];
    ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!ok) return Status::InvalidArgument("bad digest: expected sha256: and 64 lowercase hex digits");
  return Status::OK();
}

Result<BlobRef> BlobRef::Parse(std::string_view text) {
  BlobRef b;
  if (text.substr(0, kScheme.size()) == kScheme) {
    std::string_view rest;
    OVBD_RETURN_IF_ERROR(SplitRegistry(text, &b.registry, &rest));
    OVBD_RETURN_IF_ERROR(SplitAtDigest(rest, rest.find('@'),
                                       "a blob address names its digest: registry://HOST/REPO@sha256:HEX",
                                       &b.repo, &b.digest));
    OVBD_RETURN_IF_ERROR(ValidateRepo(b.repo));
    OVBD_RETURN_IF_ERROR(ValidateDigest(b.digest));
    b.kind = Kind::kRegistry;
    return b;
  }
  if (text.substr(0, 7) == "http://" || text.substr(0, 8) == "https://") {
    OVBD_RETURN_IF_ERROR(SplitAtDigest(text, text.rfind('#'), "a blob URL names its digest: URL#sha256:HEX",
                                       &b.url, &b.digest));
    OVBD_RETURN_IF_ERROR(ValidateDigest(b.digest));
    auto u = Url::Parse(b.url);
    if (!u.ok()) return Status::InvalidArgument("bad blob URL: " + u.status().message());
    b.kind = Kind::kUrl;
    return b;
  }
  return Status::InvalidArgument("'" + std::string(text) +
                                 "' is not a remote blob: registry://HOST/REPO@sha256:HEX or "
                                 "https://HOST/PATH#sha256:HEX");
}

std::string BlobRef::ToString() const {
  if (kind == Kind::kUrl) return url + "#" + digest;
  return std::string(kScheme) + registry + "/" + repo + "@" + digest;
}

Result<ImageRef> ImageRef::Parse(std::string_view text) {
  ImageRef r;
  std::string_view rest;
  OVBD_RETURN_IF_ERROR(SplitRegistry(text, &r.registry, &rest));
  if (size_t at = rest.find('@'); at != std::string_view::npos) {
    r.repo = std::string(rest.substr(0, at));
    r.digest = std::string(rest.substr(at + 1));
    OVBD_RETURN_IF_ERROR(ValidateDigest(r.digest));
  } else {
    // The tag follows the last ':' after the last '/' (none: "latest").
    size_t colon = rest.rfind(':');
    size_t slash = rest.rfind('/');
    if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
      r.repo = std::string(rest.substr(0, colon));
      r.tag = std::string(rest.substr(colon + 1));
    } else {
      r.repo = std::string(rest);
      r.tag = "latest";
    }
    OVBD_RETURN_IF_ERROR(ValidateTag(r.tag));
  }
  OVBD_RETURN_IF_ERROR(ValidateRepo(r.repo));
  return r;
}

std::string ImageRef::ToString() const {
  return std::string(kScheme) + registry + "/" + repo + (digest.empty() ? ":" + tag : "@" + digest);
}

}  // namespace ovbd::remote
