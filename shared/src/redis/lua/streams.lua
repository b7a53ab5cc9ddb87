-- streams: the run's ready streams by index, shared by the scripts that queue or acknowledge
-- tasks (prepended to each, see shared/src/redis/scripts.rs); defines a function only and
-- touches no key itself. A run's streams are a list of keys in KEYS: index 0 is the run's own
-- (its priority and DAG-level worker selector), the others those of its steps' own selectors
-- (shared/src/dag Dag::selectors); a task or an acknowledged entry names its stream by index.

-- The key of the stream of index `ix` (a number or its text) in `streams`; an error when the
-- caller did not pass it (never queue a task on another stream). Callers check the indexes
-- before any write (take_held, the first pass of submit.lua and of apply_transition.lua), so
-- this error never leaves a half-done change.
local function stream_at(streams, ix)
  local key = streams[tonumber(ix) + 1]
  if not key then
    error('ready stream ' .. ix .. ' of a task was not passed to the script')
  end
  return key
end
