// Status and Result: how every layer of ovbdfs reports success or failure.
//
// A Status carries a category (what kind of failure, so callers can branch on
// it), the errno that caused it when one did, and a message that names the
// object involved ("l1.zfile: block 17: checksum mismatch"). Errors are turned
// into errno values exactly once, at the FUSE edge (src/fuse/errno_map.cc).
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace ovbd {

class [[nodiscard]] Status {
 public:
  enum class Code : unsigned char {
    kOk = 0,
    kNotFound,         // no such file, volume, snapshot
    kCorruption,       // on-disk data fails a check: never served as content
    kInvalidArgument,  // bad command, bad option, bad size
    kIOError,          // the OS said no (errno holds why)
    kNoSpace,          // ENOSPC, or a write past the end of a volume
    kExists,           // name already taken
    kBusy,             // object in use (open volume, running job)
    kReadOnly,         // write to a read-only volume, snapshot or mount
    kNotSupported,     // valid input we do not handle (e.g. unknown algorithm)
    kTooLarge,         // a size or count past a hard limit (index entries, layers)
  };

  Status() = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status InvalidArgument(std::string m) {
    return Status(Code::kInvalidArgument, std::move(m));
  }
  // An OS failure: `err` is the errno, `what` names the operation and object.
  static Status IOError(std::string what, int err) {
    Status s(Code::kIOError, std::move(what), err);
    if (err == ENOSPC || err == EDQUOT) s.code_ = Code::kNoSpace;
    if (err == ENOENT) s.code_ = Code::kNotFound;
    if (err == EROFS) s.code_ = Code::kReadOnly;
    if (err == EEXIST) s.code_ = Code::kExists;
    if (err == EBUSY) s.code_ = Code::kBusy;
    if (err == EFBIG) s.code_ = Code::kTooLarge;
    return s;
  }
  static Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m), ENOSPC); }
  static Status Exists(std::string m) { return Status(Code::kExists, std::move(m)); }
  static Status Busy(std::string m) { return Status(Code::kBusy, std::move(m)); }
  static Status ReadOnly(std::string m) { return Status(Code::kReadOnly, std::move(m)); }
  static Status NotSupported(std::string m) { return Status(Code::kNotSupported, std::move(m)); }
  static Status TooLarge(std::string m) { return Status(Code::kTooLarge, std::move(m)); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  // The errno behind an kIOError (0 when the failure did not come from the OS).
  int os_errno() const { return errno_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;

  // Prefixes the message with context, e.g. the file or volume name.
  Status Annotate(const std::string& context) const {
    if (ok()) return *this;
    Status s = *this;
    s.msg_ = context + ": " + msg_;
    return s;
  }

  bool IsNotFound() const { return code_ == Code::kNotFound; }
  bool IsCorruption() const { return code_ == Code::kCorruption; }
  bool IsNoSpace() const { return code_ == Code::kNoSpace; }

 private:
  Status(Code c, std::string m, int e = 0) : code_(c), errno_(e), msg_(std::move(m)) {}

  Code code_ = Code::kOk;
  int errno_ = 0;
  std::string msg_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status s) : v_(std::move(s)) {}     // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ovbd

// Early return on failure; keeps the call sites short without hiding control flow.
#define OVBD_RETURN_IF_ERROR(expr)            \
  do {                                        \
    ::ovbd::Status _ovbd_st = (expr);         \
    if (!_ovbd_st.ok()) return _ovbd_st;      \
  } while (0)

#define OVBD_CONCAT_INNER(a, b) a##b
#define OVBD_CONCAT(a, b) OVBD_CONCAT_INNER(a, b)
#define OVBD_ASSIGN_OR_RETURN(lhs, expr)                                   \
  auto OVBD_CONCAT(_ovbd_res_, __LINE__) = (expr);                         \
  if (!OVBD_CONCAT(_ovbd_res_, __LINE__).ok())                             \
    return OVBD_CONCAT(_ovbd_res_, __LINE__).status();                     \
  lhs = std::move(OVBD_CONCAT(_ovbd_res_, __LINE__)).value()
