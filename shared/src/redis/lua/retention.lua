-- retention: delete one finished run that is past a retention bound, with its step log tails,
-- its index entries and the dedup key it still holds, atomically. Validates first: a run that
-- is not in a final status, or is within both bounds, is left alone.
-- KEYS[1] run hash   KEYS[2] runs-by-DAG index of its DAG (KEYS[3] again when the caller
-- found no run hash)   KEYS[3] runs-by-status index 'succeeded'   KEYS[4] runs-by-status index
-- 'failed'   KEYS[5] runs-by-status index 'aborted'
-- KEYS[6] the dedup key named by the run's `dedup` field (any key of the namespace when it
-- names none; it is only deleted when the field still holds ARGV[4] and the key this run's id)
-- KEYS[7..] the keys that go with it: the log tail and the fan hash of each of its steps, its
-- children index
-- ARGV[1] run id   ARGV[2] age cutoff (ms since the epoch): the run goes when it finished
-- before it (its `finished` field, which every final run has; else `created`, which only runs
-- of earlier versions have; 0: no age bound)
-- ARGV[3] keep: the run goes when more than this many runs are finished, counted over
-- KEYS[3..5] (0: no count bound)   ARGV[4] the run's `dedup` field as the caller read it,
-- which named KEYS[6] ('' when none)
-- Returns 1 when the run was deleted; 0 when it was kept (not final, or within both bounds);
-- 2 when the run hash was already gone (its id is removed from KEYS[2..5], so a stale index
-- entry never blocks the count bound).
local id = ARGV[1]
local run = redis.call('HMGET', KEYS[1], 'status', 'finished', 'created', 'dedup')
local status = run[1]
if status == false then
  for i = 2, 5 do
    redis.call('ZREM', KEYS[i], id)
  end
  return 2
end
local index
if status == 'succeeded' then
  index = KEYS[3]
elseif status == 'failed' then
  index = KEYS[4]
elseif status == 'aborted' then
  index = KEYS[5]
else
  return 0
end
local due = false
local cutoff = tonumber(ARGV[2])
if cutoff > 0 then
  local at = run[2] or run[3]
  due = (tonumber(at or '0') or 0) < cutoff
end
local keep = tonumber(ARGV[3])
if not due and keep > 0 then
  local finished = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4])
    + redis.call('ZCARD', KEYS[5])
  due = finished > keep
end
if not due then
  return 0
end
if run[4] and run[4] == ARGV[4] and redis.call('GET', KEYS[6]) == id then
  redis.call('DEL', KEYS[6])
end
for i = 7, #KEYS do
  redis.call('DEL', KEYS[i])
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', index, id)
return 1
