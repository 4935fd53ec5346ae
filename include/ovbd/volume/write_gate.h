// WriteGate: lets any number of writers in at once, or one quiescer alone.
//
// Like a reader/writer lock with writers as the shared side, but a waiting
// quiescer stops new writers from entering. A volume under steady write
// load (a VM, fio at queue depth 32) always has some write in flight; with a
// reader-preferring lock a snapshot could wait for a gap that never comes.
#pragma once

#include <cstdint>
#include "ovbd/io/mutex.h"

namespace ovbd {

class WriteGate {
 public:
  void Enter() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    cv_.Wait([&] {
      mu_.AssertHeld();
      return !closed_;
    });
    ++active_;
  }
  void Leave() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    if (--active_ == 0 && closed_) cv_.SignalAll();
  }
  // Waits for other quiescers, shuts the gate, then waits until the writers
  // inside have left.
  void Close() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    cv_.Wait([&] {
      mu_.AssertHeld();
      return !closed_;
    });
    closed_ = true;
    cv_.Wait([&] {
      mu_.AssertHeld();
      return active_ == 0;
    });
  }
  void Open() EXCLUDES(mu_) {
    MutexLock l(&mu_);
    closed_ = false;
    cv_.SignalAll();
  }

  // A writer's stay inside the gate.
  class Writer {
   public:
    explicit Writer(WriteGate& g) : g_(&g) { g_->Enter(); }
    ~Writer() { Leave(); }
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;
    void Leave() {
      if (g_) g_->Leave();
      g_ = nullptr;
    }

   private:
    WriteGate* g_;
  };
  // The quiescer's time alone.
  class Closed {
   public:
    explicit Closed(WriteGate& g) : g_(g) { g_.Close(); }
    ~Closed() { g_.Open(); }
    Closed(const Closed&) = delete;
    Closed& operator=(const Closed&) = delete;

   private:
    WriteGate& g_;
  };

 private:
  Mutex mu_;
  CondVar cv_{&mu_};
  uint64_t active_ GUARDED_BY(mu_) = 0;
  bool closed_ GUARDED_BY(mu_) = false;
};

}  // namespace ovbd
