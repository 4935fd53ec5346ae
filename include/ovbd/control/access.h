// Who runs a `.control` command, and what that caller may do to a volume.
//
// The kernel checks the mode of `.control` itself (default_permissions), but
// one open `.control` reaches every volume of the store, so each command is
// checked again here against the volume it acts on, with the rules the
// kernel applies to files: the owner class, else the group class (primary
// or supplementary group), else the other class; root (uid 0) may do
// anything. See docs/CONTROL.md, "Who may use it".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ovbd/io/status.h"
#include "ovbd/store/manifest.h"

namespace ovbd {

struct Caller {
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::vector<uint32_t> groups;  // supplementary groups

  bool root() const { return uid == 0; }
  bool InGroup(uint32_t g) const;
};

// Access bits as in access(2): 4 read, 2 write, 1 execute.
inline constexpr unsigned kMayRead = 4;
inline constexpr unsigned kMayWrite = 2;

// Whether `c` has every bit of `mask` on a file with `attrs` (root always has).
bool MayAccess(const Caller& c, const FileAttrs& attrs, unsigned mask);
// Owner or root: what changing a file's metadata or removing it asks of a
// caller here (the directory of volumes is the store's, not the caller's).
bool OwnsOrRoot(const Caller& c, const FileAttrs& attrs);

// The refusals, as Status values that become EACCES and EPERM at the FUSE
// edge. `what` names the command and its object ("delete vm1").
Status AccessDenied(const std::string& what, const std::string& why);
Status NotPermitted(const std::string& what, const std::string& why);

}  // namespace ovbd
