#include "ovbd/control/access.h"

#include <algorithm>
#include <cerrno>

namespace ovbd {

bool Caller::InGroup(uint32_t g) const {
  return g == gid || std::find(groups.begin(), groups.end(), g) != groups.end();
}

bool MayAccess(const Caller& c, const FileAttrs& attrs, unsigned mask) {
  if (c.root()) return true;
  mask &= 7u;
  unsigned bits;
  // Exactly one class applies, as in the kernel: an owner whose owner bits
  // lack read is refused even when the group or other bits allow it.
  if (c.uid == attrs.uid) {
    bits = (attrs.mode >> 6) & 7u;
  } else if (c.InGroup(attrs.gid)) {
    bits = (attrs.mode >> 3) & 7u;
  } else {
    bits = attrs.mode & 7u;
  }
  return (bits & mask) == mask;
}

bool OwnsOrRoot(const Caller& c, const FileAttrs& attrs) { return c.root() || c.uid == attrs.uid; }

Status AccessDenied(const std::string& what, const std::string& why) {
  return Status::IOError(what + ": permission denied (" + why + ")", EACCES);
}

Status NotPermitted(const std::string& what, const std::string& why) {
  return Status::IOError(what + ": operation not permitted (" + why + ")", EPERM);
}

}  // namespace ovbd
