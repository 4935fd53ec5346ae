// The one translation of Status into errno, at the FUSE edge.
#pragma once

#include "ovbd/io/status.h"

namespace ovbd::fuse {

int ToErrno(const Status& s);

}  // namespace ovbd::fuse
