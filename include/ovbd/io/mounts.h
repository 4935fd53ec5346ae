// The ovbdfs mounts this process can see (/proc/self/mountinfo): how the
// daemon tells "already mounted" apart from "locked by another process",
// and how `ovbd` finds the mount of a store to send its commands through.
#pragma once

#include <string>
#include <vector>

namespace ovbd {

// Mount points of fuse.ovbdfs mounts whose source is `store` (compared as
// given: pass a real path), in this mount namespace, oldest first.
std::vector<std::string> OvbdfsMountsOf(const std::string& store);

}  // namespace ovbd
