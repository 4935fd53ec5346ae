// Layer merging. Two adjacent layers that every stack uses together can be
// replaced by one; when the upper one hides data of the lower, that frees
// the hidden data (deleting snapshots reclaims space this way). The merged
// layer is written outside every lock (its inputs are immutable files);
// the switch of each manifest is a short commit under that volume's
// command lock, which re-checks that the pair is still there.
#include <algorithm>

#include "ovbd/layer/layer_merge.h"
#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

namespace {

using Lists = std::vector<const std::vector<std::string>*>;

Lists AllStacks(const std::map<std::string, Manifest>& manifests) {
  Lists lists;
  for (const auto& [n, m] : manifests) {
    if (!m.deleted) lists.push_back(&m.lowers);
    for (const auto& s : m.snapshots) lists.push_back(&s.lowers);
  }
  return lists;
}

// Every stack holding x has y right above it, and every stack holding y
// has x right below it.
bool AlwaysTogether(const Lists& lists, const std::string& x, const std::string& y) {
  for (const auto* l : lists) {
    for (size_t i = 0; i < l->size(); ++i) {
      if ((*l)[i] == x && (i + 1 == l->size() || (*l)[i + 1] != y)) return false;
      if ((*l)[i] == y && (i == 0 || (*l)[i - 1] != x)) return false;
    }
  }
  return true;
}

// Adjacent pairs of `l` that are always together, lowest first.
std::vector<std::pair<std::string, std::string>> TogetherPairs(const Lists& all,
                                                               const std::vector<std::string>& l) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i + 1 < l.size(); ++i) {
    if (l[i] != l[i + 1] && AlwaysTogether(all, l[i], l[i + 1])) out.emplace_back(l[i], l[i + 1]);
  }
  return out;
}

bool ReplacePair(std::vector<std::string>* l, const std::string& x, const std::string& y,
                 const std::string& xy) {
  bool changed = false;
  for (size_t i = 0; i + 1 < l->size(); ++i) {
    if ((*l)[i] == x && (*l)[i + 1] == y) {
      (*l)[i] = xy;
      l->erase(l->begin() + static_cast<ptrdiff_t>(i) + 1);
      changed = true;
    }
  }
  return changed;
}

bool HasPair(const Manifest& m, const std::string& x, const std::string& y) {
  auto has = [&](const std::vector<std::string>& l) {
    for (size_t i = 0; i + 1 < l.size(); ++i)
      if (l[i] == x && l[i + 1] == y) return true;
    return false;
  };
  if (has(m.lowers)) return true;
  for (const auto& s : m.snapshots)
    if (has(s.lowers)) return true;
  return false;
}

}  // namespace

Result<std::string> Store::WriteMerged(const MergePlan& plan, Job* job, std::unique_ptr<Pin>* pin) {
  OVBD_ASSIGN_OR_RETURN(auto lx, OpenLayerFile(plan.x));
  OVBD_ASSIGN_OR_RETURN(auto ly, OpenLayerFile(plan.y));
  const std::string id = lsmt::NewUuid();
  const std::string file = filename::MergedLayerFile(id);
  const std::string tmp_name = filename::TempFile(id, "merge");
  *pin = PinFiles({tmp_name, file});
  const std::string tmp = LayerPath(tmp_name);
  Status s = [&]() -> Status {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> out, env_->OpenRW(tmp, true));
    lsmt::WriteOptions wo;
    wo.uuid = id;
    wo.parent_uuid = lsmt::IsValidUuid(lx->header().parent_uuid) ? lx->header().parent_uuid : "";
    wo.message = "merged";
    Status step;
    const Status stopped = job ? job->CancelledStatus() : Status::OK();
    Status w = lsmt::WriteMergedLayer(
        *lx, *ly, out.get(), wo,
        [&](uint64_t done, uint64_t total) {
          if (job) job->SetProgress(done, total);
          step = env_->CrashPoint("merge.copying");
          return step.ok() && !(job && job->cancelled());
        },
        stopped);
    OVBD_RETURN_IF_ERROR(step);  // the real cause of a stop
    OVBD_RETURN_IF_ERROR(w);
    if (job && job->cancelled()) return job->CancelledStatus();
    return Status::OK();
  }();
  if (!s.ok()) {
    (void)env_->Remove(tmp);
    return s;
  }
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("merge.after_write"));
  OVBD_RETURN_IF_ERROR(env_->Rename(tmp, LayerPath(file)));
  OVBD_RETURN_IF_ERROR(env_->SyncDir(JoinPath(dir_, filename::kLayersDir)));
  return file;
}

Status Store::InstallLowers(const std::string& name, const std::vector<std::string>& lowers) {
  std::shared_ptr<Volume> v;
  {
    MutexLock lk(&mu_);
    auto it = open_.find(name);
    if (it == open_.end()) return Status::OK();
    v = it->second;
  }
  std::vector<std::shared_ptr<lsmt::Layer>> layers;
  for (const auto& f : lowers) {
    OVBD_ASSIGN_OR_RETURN(auto l, OpenLayerFile(f));
    layers.push_back(std::move(l));
  }
  // The merged index is built before writes are held off (O(N log N) over
  // up to 255 layers); only the pointer swap happens inside. The upper
  // cannot change meanwhile: only a snapshot replaces it, under the
  // volume's command lock, which the caller holds.
  auto st = Stack::Make(std::move(layers), v->stack()->upper);
  return v->WithWritesQuiesced([&] {
    v->InstallStack(std::move(st));
    return Status::OK();
  });
}

Status Store::InstallMerged(const std::string& vol, const MergePlan& plan, const std::string& xy) {
  Manifest m;
  {
    MutexLock lk(&mu_);
    auto it = manifests_.find(vol);
    if (it == manifests_.end()) return Status::OK();  // deleted meanwhile
    m = it->second;
  }
  bool changed = ReplacePair(&m.lowers, plan.x, plan.y, xy);
  for (auto& s : m.snapshots) changed |= ReplacePair(&s.lowers, plan.x, plan.y, xy);
  if (!changed) return Status::OK();
  const Manifest now = m;
  // Each manifest switches in its own atomic write; a crash in between
  // leaves some stacks on X,Y and some on XY, all valid.
  OVBD_RETURN_IF_ERROR(WriteManifest(std::move(m)));
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("merge.after_manifest"));
  if (!now.deleted) OVBD_RETURN_IF_ERROR(InstallLowers(vol, now.lowers));
  for (const auto& s : now.snapshots) OVBD_RETURN_IF_ERROR(InstallLowers(vol + "@" + s.name, s.lowers));
  return Status::OK();
}

Result<int> Store::MergeHidden(Job* job) {
  MutexLock one(&merge_mu_);
  int merges = 0;
  for (;;) {
    if (job && job->cancelled()) return job->CancelledStatus();
    std::vector<std::pair<std::string, std::string>> cands;
    {
      MutexLock lk(&mu_);
      const Lists all = AllStacks(manifests_);
      for (const auto* l : all) {
        for (auto& p : TogetherPairs(all, *l)) {
          if (std::find(cands.begin(), cands.end(), p) == cands.end()) cands.push_back(std::move(p));
        }
      }
    }
    std::optional<MergePlan> plan;
    for (const auto& [x, y] : cands) {
      // Only worth the copy when the upper layer hides data of the lower.
      OVBD_ASSIGN_OR_RETURN(auto lx, OpenLayerFile(x));
      OVBD_ASSIGN_OR_RETURN(auto ly, OpenLayerFile(y));
      if (lsmt::HiddenBytes(*lx, *ly) == 0) continue;
      plan = MergePlan{x, y};
      break;
    }
    if (!plan) return merges;
    std::unique_ptr<Pin> pin;
    OVBD_ASSIGN_OR_RETURN(std::string xy, WriteMerged(*plan, job, &pin));
    std::vector<std::string> users;
    {
      MutexLock lk(&mu_);
      for (const auto& [n, m] : manifests_)
        if (HasPair(m, plan->x, plan->y)) users.push_back(n);
    }
    {
      OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, users, false));
      // Each manifest is re-read under its lock and left alone if the pair
      // is gone. A stack made after `users` was taken (a clone) keeps X,Y,
      // which stays valid; the next round merges it.
      for (const auto& n : users) OVBD_RETURN_IF_ERROR(InstallMerged(n, *plan, xy));
    }
    pin.reset();
    OVBD_RETURN_IF_ERROR(CollectGarbageNow(nullptr));
    ++merges;
  }
}

Result<int> Store::MergeForVolume(const std::string& vol) {
  std::optional<MergePlan> plan;
  {
    MutexLock lk(&mu_);
    auto it = manifests_.find(vol);
    if (it == manifests_.end()) return 0;
    const Lists all = AllStacks(manifests_);
    auto pairs = TogetherPairs(all, it->second.lowers);
    if (!pairs.empty()) plan = MergePlan{pairs.front().first, pairs.front().second};
  }
  if (!plan) return 0;
  std::unique_ptr<Pin> pin;
  OVBD_ASSIGN_OR_RETURN(std::string xy, WriteMerged(*plan, nullptr, &pin));
  OVBD_RETURN_IF_ERROR(InstallMerged(vol, *plan, xy));
  return 1;
}

}  // namespace ovbd
