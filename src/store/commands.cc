// What every command holds while it runs: the group lock (shared, or
// exclusive for `snapshot --all`), the command locks of the volumes it
// changes, and reservations of the names it creates.
#include "ovbd/store/manifest_group.h"
#include "store_internal.h"

namespace ovbd {

Result<std::unique_ptr<Store::CommandScope>> Store::CommandScope::Enter(
    Store* s, std::vector<std::string> vols, bool exclusive) NO_THREAD_SAFETY_ANALYSIS {
  auto scope = std::unique_ptr<CommandScope>(new CommandScope(s, exclusive));
  if (exclusive) {
    s->group_mu_.Lock();
    scope->locked_ = true;
    bool pending;
    {
      MutexLock lk(&s->mu_);
      pending = s->group_pending_;
    }
    if (pending) {
      OVBD_RETURN_IF_ERROR(FinishManifestGroup(s->env_, s->dir_));
      MutexLock lk(&s->mu_);
      s->group_pending_ = false;
    }
    return scope;
  }
  // Shared: a group left committed but unapplied must be finished first,
  // or its older manifests could later land over ours.
  for (;;) {
    OVBD_RETURN_IF_ERROR(s->FinishPendingGroup());
    s->group_mu_.LockShared();
    bool pending;
    {
      MutexLock lk(&s->mu_);
      pending = s->group_pending_;
    }
    if (!pending) break;
    s->group_mu_.UnlockShared();
  }
  scope->locked_ = true;
  scope->guard_ = s->vlocks_.Lock(std::move(vols));
  return scope;
}

Store::CommandScope::~CommandScope() NO_THREAD_SAFETY_ANALYSIS {
  guard_.Unlock();
  if (!locked_) return;
  if (exclusive_) {
    store_->group_mu_.Unlock();
  } else {
    store_->group_mu_.UnlockShared();
  }
}

Status Store::FinishPendingGroup() {
  {
    MutexLock lk(&mu_);
    if (!group_pending_) return Status::OK();
  }
  WriterLock g(&group_mu_);
  {
    MutexLock lk(&mu_);
    if (!group_pending_) return Status::OK();
  }
  OVBD_RETURN_IF_ERROR(FinishManifestGroup(env_, dir_));
  MutexLock lk(&mu_);
  group_pending_ = false;
  return Status::OK();
}

Store::Reservation::~Reservation() {
  MutexLock lk(&store_->mu_);
  store_->reserved_.erase(name_);
}

Result<std::unique_ptr<Store::Reservation>> Store::Reserve(const std::string& name) {
  MutexLock lk(&mu_);
  OVBD_RETURN_IF_ERROR(EnsureNameFree(name));
  reserved_.insert(name);
  return std::make_unique<Reservation>(this, name);
}

}  // namespace ovbd
