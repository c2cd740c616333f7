-- Argo CD health check for llmfleet.io/LLMDeployment (shipped in argocd-cm.yaml beside this
-- file, tested by tests/gitops on status snapshots taken from the real operator).
--
-- The operator reports Kubernetes-style status: observedGeneration, and the conditions
-- Ready, Progressing, Degraded, plus Reconciling and Stalled (kstatus' abnormal-true pair,
-- which Flux reads). In order:
--   no status yet, or a spec generation the operator has not observed -> Progressing
--   Stalled or Degraded True (pods that cannot be scheduled, too few GPUs, crash loops,
--     a child it does not own, an invalid spec)                     -> Degraded, its message
--   Progressing or Reconciling True (a rollout, a scale-down)      -> Progressing
--   Ready True, scaled to zero by spec.replicas: 0                  -> Suspended
--   Ready True (all replicas ready, or autoscaled to zero while idle:
--     the gateway wakes it on the first request)                     -> Healthy
--   Ready False (replicas starting, e.g. a scale-up)                -> Progressing
-- Only Argo CD's default libraries are used (base and table: no string library).

local hs = {}

local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function is_true(kind)
  local c = condition(kind)
  return c ~= nil and c.status == "True"
end

local function say(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the llmfleet operator to report a status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the llmfleet operator to observe generation " .. generation
  return hs
end

for _, kind in ipairs({"Stalled", "Degraded"}) do
  if is_true(kind) then
    hs.status = "Degraded"
    hs.message = say(condition(kind))
    return hs
  end
end

for _, kind in ipairs({"Progressing", "Reconciling"}) do
  if is_true(kind) then
    hs.status = "Progressing"
    hs.message = say(condition(kind))
    return hs
  end
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  if ready.reason == "ScaledToZero" and obj.spec.autoscaling == nil then
    hs.status = "Suspended"
    hs.message = "Scaled to zero by spec.replicas: 0"
    return hs
  end
  hs.status = "Healthy"
  if ready.reason == "ScaledToZero" then
    hs.message = "Scaled to zero while idle: the first request wakes it"
  else
    hs.message = say(ready)
  end
  return hs
end

if ready ~= nil and ready.status == "False" then
  hs.status = "Progressing"
  hs.message = say(ready)
  return hs
end

hs.status = "Unknown"
hs.message = "The llmfleet operator reports no Ready condition"
return hs
