// Clang thread-safety annotations (-Wthread-safety). They state which mutex
// guards which field and which lock a function needs or must not hold, so
// the compiler checks the lock rules instead of a reviewer. Other compilers
// see nothing. The lock order of the whole daemon is in docs/ARCHITECTURE.md.
#pragma once

#if defined(__clang__)
#define OVBD_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define OVBD_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) OVBD_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY OVBD_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) OVBD_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) OVBD_THREAD_ANNOTATION(pt_guarded_by(x))
#define ACQUIRED_BEFORE(...) OVBD_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) OVBD_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define REQUIRES(...) OVBD_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) OVBD_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#define ACQUIRE(...) OVBD_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) OVBD_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) OVBD_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) OVBD_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) OVBD_THREAD_ANNOTATION(release_generic_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) OVBD_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define EXCLUDES(...) OVBD_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) OVBD_THREAD_ANNOTATION(assert_capability(x))
#define RETURN_CAPABILITY(x) OVBD_THREAD_ANNOTATION(lock_returned(x))
#define NO_THREAD_SAFETY_ANALYSIS OVBD_THREAD_ANNOTATION(no_thread_safety_analysis)
