// What the daemon tells an operator when it cannot start: the cause it can
// see from here, and what to do about it. Each function returns one or more
// lines of text (no trailing newline), or "" when it finds nothing to say.
#pragma once

#include <string>

namespace ovbd::fuse {

// "" when /dev/fuse exists; else why not and how to get it (modprobe fuse,
// or passing the device into a container).
std::string CheckFuseDevice();

// After a mount failed (libfuse has printed its own line): the likely
// causes found -- a missing fusermount3 or an inaccessible /dev/fuse for a
// user other than root (and, with allow_other, no user_allow_other in
// /etc/fuse.conf), a mount point that does not exist, is not a directory or
// is a dead FUSE mount -- with the next step for each.
std::string DiagnoseMountFailure(const std::string& mountpoint, bool allow_other);

// The mount point's part of that alone: missing, not a directory, or a dead
// FUSE mount.
std::string DiagnoseMountPoint(const std::string& mountpoint);

// For a store that another process holds locked: where it is mounted (and
// how to unmount it), or which process holds the lock.
std::string DescribeStoreHolder(const std::string& store_path);

}  // namespace ovbd::fuse
