// The FUSE session settings that ovbdfs (main.cc) shares with the FUSE
// baseline of the benchmarks (bench/fuse_limit.cc), so that the two differ
// only in what serves the requests. Header-only: the baseline links libfuse
// and nothing of ovbdfs.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <malloc.h>

#include <algorithm>
#include <cstdio>

namespace ovbd::fuse {

// Request and reply buffers are 1 MiB: keep glibc from mmap/munmap-ing
// each one (a 2-3x cost on large I/O).
inline void TuneMallocForFuse() {
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

// Read replies are spliced from the file they read only when the pipe holds
// a whole reply; pipes cannot grow past fs.pipe-max-size (1 MiB by default,
// also for root without CAP_SYS_RESOURCE), so read requests are capped at
// the largest power of two from 128 KiB to 1 MiB that fits with the header
// (512 KiB there).
inline unsigned MaxRead() {
  unsigned max_read = 1u << 20;
  unsigned long pipe_max = 1ul << 20;
  if (FILE* f = std::fopen("/proc/sys/fs/pipe-max-size", "r")) {
    if (std::fscanf(f, "%lu", &pipe_max) != 1) pipe_max = 1ul << 20;
    std::fclose(f);
  }
  while (max_read > (128u << 10) && max_read + (64u << 10) > pipe_max) max_read /= 2;
  return max_read;
}

// Serves the session until it ends: on the calling thread alone
// (`singlethread`), or on up to `threads` workers, each reading its own
// clone of /dev/fuse. Returns what libfuse's loop returns.
inline int RunSessionLoop(fuse_session* se, bool singlethread, int threads) {
  if (singlethread) return fuse_session_loop(se);
  fuse_loop_config* lc = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(lc, 1);
  fuse_loop_cfg_set_max_threads(lc, static_cast<unsigned>(std::max(1, threads)));
  // No idle-thread limit: with one, libfuse ends and recreates workers
  // continuously under queue depth (measured: hundreds of thread creations
  // per second).
  const int ret = fuse_session_loop_mt(se, lc);
  fuse_loop_cfg_destroy(lc);
  return ret;
}

}  // namespace ovbd::fuse
