-- Health of an appstack.dev AppStack for Argo CD. The operator writes kstatus
-- conditions: exactly one of Ready, Reconciling and Stalled is True, and
-- Stalled only for a state that needs a change (a migration out of retries,
-- a rollout past its deadline). Conditions describe the spec the operator
-- last saw, so they count only once status.observedGeneration has caught up
-- with metadata.generation (it starts at -1).
local hs = {status = "Progressing", message = "Waiting for the AppStack operator to observe the stack"}

if obj.status == nil or obj.status.observedGeneration == nil
    or obj.metadata.generation == nil
    or obj.status.observedGeneration ~= obj.metadata.generation then
  return hs
end

local function describe(condition)
  local text = condition.reason or condition.type
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local ready, reconciling, stalled
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Reconciling" and condition.status == "True" then
    reconciling = condition
  elseif condition.type == "Stalled" and condition.status == "True" then
    stalled = condition
  end
end

if stalled ~= nil then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif reconciling ~= nil then
  hs.message = describe(reconciling)
elseif ready ~= nil then
  hs.message = describe(ready)
end
return hs
