#include "errno_map.h"

#include <cerrno>

namespace ovbd::fuse {

int ToErrno(const Status& s) {
  using C = Status::Code;
  switch (s.code()) {
    case C::kOk: return 0;
    case C::kNotFound: return ENOENT;
    case C::kCorruption: return EIO;  // never serve bad data: fail the request
    case C::kInvalidArgument: return EINVAL;
    case C::kIOError: return s.os_errno() ? s.os_errno() : EIO;
    case C::kNoSpace: return ENOSPC;
    case C::kExists: return EEXIST;
    case C::kBusy: return EBUSY;
    case C::kReadOnly: return EROFS;
    case C::kNotSupported: return EOPNOTSUPP;
    case C::kTooLarge: return EFBIG;
  }
  return EIO;
}

}  // namespace ovbd::fuse
