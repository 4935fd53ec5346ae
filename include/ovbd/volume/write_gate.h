// WriteGate: lets any number of writers in at once, or one quiescer alone.
//
// Like a reader/writer lock with writers as the shared side, but a waiting
// quiescer stops new writers from entering. A volume under steady write
// load (a VM, fio at queue depth 32) always has some write in flight; with a
// reader-preferring lock a snapshot could wait for a gap that never comes.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace ovbd {

class WriteGate {
 public:
  void Enter() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return !closed_; });
    ++active_;
  }
  void Leave() {
    std::lock_guard l(mu_);
    if (--active_ == 0 && closed_) cv_.notify_all();
  }
  // Waits for other quiescers, shuts the gate, then waits until the writers
  // inside have left.
  void Close() {
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return !closed_; });
    closed_ = true;
    cv_.wait(l, [&] { return active_ == 0; });
  }
  void Open() {
    std::lock_guard l(mu_);
    closed_ = false;
    cv_.notify_all();
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
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t active_ = 0;
  bool closed_ = false;
};

}  // namespace ovbd
