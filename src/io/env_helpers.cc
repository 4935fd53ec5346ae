// Env helpers written only in terms of Env primitives, so they behave the
// same (and fail the same) under FaultInjectionEnv as under POSIX.
#include <algorithm>
#include <memory>
#include <string>

#include "ovbd/io/env.h"

#include <unistd.h>

namespace ovbd {

std::string Status::ToString() const {
  if (ok()) return "OK";
  const char* kind = "error";
  switch (code_) {
    case Code::kOk: kind = "OK"; break;
    case Code::kNotFound: kind = "not found"; break;
    case Code::kCorruption: kind = "corruption"; break;
    case Code::kInvalidArgument: kind = "invalid argument"; break;
    case Code::kIOError: kind = "I/O error"; break;
    case Code::kNoSpace: kind = "no space"; break;
    case Code::kExists: kind = "already exists"; break;
    case Code::kBusy: kind = "busy"; break;
    case Code::kReadOnly: kind = "read-only"; break;
    case Code::kNotSupported: kind = "not supported"; break;
    case Code::kTooLarge: kind = "too large"; break;
  }
  return std::string(kind) + ": " + msg_;
}

Status ReadableFile::ReadExact(uint64_t off, size_t n, char* buf) const {
  size_t got = 0;
  OVBD_RETURN_IF_ERROR(ReadAt(off, n, buf, &got));
  if (got != n) {
    return Status::Corruption(Name() + ": truncated: wanted " + std::to_string(n) +
                              " bytes at offset " + std::to_string(off) + ", file has " +
                              std::to_string(Size()));
  }
  return Status::OK();
}

Status PastEndError(const ReadableFile& f, uint64_t off, uint64_t n, uint64_t now) {
  return Status::IOError(f.Name() + ": bytes [" + std::to_string(off) + ", " +
                             std::to_string(off + n) + ") lie past the end of the file (now " +
                             std::to_string(now) + " bytes; truncated while in use?)",
                         EIO);
}

Status ReadableFile::ReadMapped(uint64_t off, size_t n, char* buf) const {
  size_t got = 0;
  OVBD_RETURN_IF_ERROR(ReadAt(off, n, buf, &got));
  if (got != n) return PastEndError(*this, off + got, n - got, off + got);
  return Status::OK();
}

Status ReadableFile::CheckRange(uint64_t off, uint64_t n) const {
  const uint64_t size = Size();
  if (off > size || n > size - off) return PastEndError(*this, off, n, size);
  return Status::OK();
}

Result<ReadableFile::DataRun> ReadableFile::NextData(uint64_t off) const {
  const uint64_t size = Size();
  if (off >= size) return DataRun{size, size};
  return DataRun{off, size};
}

Status Env::CrashPoint(std::string_view) { return Status::OK(); }

namespace {
class NoConfinement final : public Confinement {};
}  // namespace

Result<std::unique_ptr<Confinement>> Env::Confine(const std::string&) {
  return std::unique_ptr<Confinement>(std::make_unique<NoConfinement>());
}

std::string JoinPath(std::string_view a, std::string_view b) {
  std::string out(a);
  while (!out.empty() && out.back() == '/' && out.size() > 1) out.pop_back();
  if (!out.empty() && out.back() != '/') out.push_back('/');
  while (!b.empty() && b.front() == '/') b.remove_prefix(1);
  out.append(b);
  return out;
}

std::string DirName(const std::string& path) {
  auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

bool Env::Exists(const std::string& path) { return Stat(path).ok(); }

uint32_t Env::CurrentUid() { return static_cast<uint32_t>(::geteuid()); }

Status Env::WriteFileSynced(const std::string& path, std::string_view data) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, OpenRW(path, /*create=*/true));
  OVBD_RETURN_IF_ERROR(f->WriteAt(0, data.data(), data.size()));
  return f->Sync();
}

Status Env::WriteFileAtomic(const std::string& path, std::string_view data, bool* renamed) {
  if (renamed) *renamed = false;
  const std::string tmp = path + ".tmp";
  if (Exists(tmp)) OVBD_RETURN_IF_ERROR(Remove(tmp));
  Status s = WriteFileSynced(tmp, data);
  if (s.ok()) s = CrashPoint("atomic_write.before_rename");
  if (s.ok()) s = Rename(tmp, path);
  if (!s.ok()) {
    // Leave no half-written temp file behind (ENOSPC, EIO). If it was never
    // created (EEXIST cannot happen: it was removed above) this fails harmlessly.
    (void)Remove(tmp);
    return s;
  }
  if (renamed) *renamed = true;
  return SyncDir(DirName(path));
}

Result<std::string> Env::ReadSmallFile(const std::string& path, size_t max_size) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, OpenReadable(path));
  if (f->Size() > max_size) {
    return Status::TooLarge(path + ": " + std::to_string(f->Size()) + " bytes, limit " +
                            std::to_string(max_size));
  }
  std::string out(f->Size(), '\0');
  OVBD_RETURN_IF_ERROR(f->ReadExact(0, out.size(), out.data()));
  return out;
}

namespace {
// Copies src's bytes into the empty dst (holes preserved where src has all-zero
// 4 KiB blocks) and syncs it.
Status CopyBytes(const ReadableFile& src, RWFile* dst) {
  constexpr size_t kChunk = 1 << 20;
  constexpr size_t kBlock = 4096;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  const uint64_t size = src.Size();
  for (uint64_t off = 0; off < size; off += kChunk) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - off));
    OVBD_RETURN_IF_ERROR(src.ReadExact(off, n, buf.get()));
    // Leave all-zero blocks as holes: layer files are mostly sparse.
    for (size_t b = 0; b < n; b += kBlock) {
      size_t len = std::min(kBlock, n - b);
      bool zero = true;
      for (size_t i = 0; i < len && zero; ++i) zero = buf[b + i] == 0;
      if (!zero) OVBD_RETURN_IF_ERROR(dst->WriteAt(off + b, buf.get() + b, len));
    }
  }
  OVBD_RETURN_IF_ERROR(dst->Truncate(size));
  return dst->Sync();
}
}  // namespace

Status Env::CopyFile(const std::string& from, const std::string& to) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> src, OpenReadable(from));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> dst, OpenRW(to, /*create=*/true));
  Status s = CopyBytes(*src, dst.get());
  dst.reset();
  if (!s.ok()) {
    (void)Remove(to);  // created above: a partial copy is of no use to anyone
    return s;
  }
  return SyncDir(DirName(to));
}

}  // namespace ovbd
