-- submit: create a run, deduplicated and admitted (or delayed, or waiting), atomically.
-- KEYS[1] run hash   KEYS[2] unused (was the all-runs index)   KEYS[3] runs-by-DAG index   KEYS[4] runs-by-status
-- index (queued)   KEYS[5] the ready stream of the run's priority   KEYS[6] delayed ZSET
-- KEYS[7] waiting ZSET of its queue   KEYS[8] active SET of its queue   KEYS[9] active SET of its
-- DAG   KEYS[10] queues-with-waiting-runs SET   KEYS[11] paused queues SET
-- KEYS[12] dedup key (used when ARGV[8] = 1)   KEYS[13] cron-slot key (used when ARGV[9] = 1)
-- KEYS[14] events stream   KEYS[15] idempotency record HASH (used when ARGV[11] is not '')
-- ARGV[1] run id   ARGV[2] queue name   ARGV[3] queue maxConcurrency (0: none)
-- ARGV[4] DAG maxActiveRuns when it applies apart from the queue (0: none)
-- ARGV[5] due time in ms (0: now)   ARGV[6] reason shown while delayed   ARGV[7] waiting score
-- ARGV[8] 1 to hold the dedup key   ARGV[9] 1 to claim the cron slot   ARGV[10] its TTL (ms)
-- ARGV[11] the item's index in its request under an Idempotency-Key ('' : no key)
-- ARGV[12] digest of that request's body   ARGV[13] the record's TTL (ms)
-- ARGV[14] n, then n hash field/value pairs   then k, then k pairs: step name, msgpack StepTask
-- then the events of the new run (the section of add_events in lua/events.lua), written only
-- when the run is created
-- Returns {outcome, run id, reason}: outcome 'admitted', 'waiting' (with the reason it waits)
-- or 'delayed' for a new run;
-- 'deduplicated' with the id of the run holding the dedup key; 'fired' with the id of the run
-- the cron slot already started (or '' if none was created); 'exists' when the id is taken;
-- under an Idempotency-Key, 'replayed' with the run id this item got before and 'c' (created)
-- or 'd' (deduplicated), or 'conflict' when the key was used with another body. The record
-- of the item is written with the run it records, so however a request is cut, a retry with
-- the same key creates exactly the runs still missing.
local id = ARGV[1]
local idem = ARGV[11]
if idem ~= '' then
  local digest = redis.call('HGET', KEYS[15], '#')
  if digest and digest ~= ARGV[12] then
    return {'conflict', ''}
  end
  local done = redis.call('HGET', KEYS[15], idem)
  if done then
    return {'replayed', string.sub(done, 3), string.sub(done, 1, 1)}
  end
end
-- Records under the Idempotency-Key what this item got: kind 'c' or 'd' and the run id.
local function remember(kind, run_id)
  if idem ~= '' then
    if redis.call('HSETNX', KEYS[15], '#', ARGV[12]) == 1 then
      redis.call('PEXPIRE', KEYS[15], ARGV[13])
    end
    redis.call('HSET', KEYS[15], idem, kind .. ':' .. run_id)
  end
end
if ARGV[9] == '1' then
  local fired = redis.call('GET', KEYS[13])
  if fired then
    return {'fired', fired}
  end
end
if ARGV[8] == '1' then
  local holder = redis.call('GET', KEYS[12])
  if holder then
    if ARGV[9] == '1' then
      redis.call('SET', KEYS[13], '', 'PX', ARGV[10])
    end
    remember('d', holder)
    return {'deduplicated', holder}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', id}
end
if ARGV[8] == '1' then
  redis.call('SET', KEYS[12], id)
end
if ARGV[9] == '1' then
  redis.call('SET', KEYS[13], id, 'PX', ARGV[10])
end
remember('c', id)
local n = tonumber(ARGV[14])
local fields = {}
for i = 15, 14 + 2 * n do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], 0, id)
local t = 15 + 2 * n
local tasks = {}
for i = 1, tonumber(ARGV[t]) do
  tasks[#tasks + 1] = {ARGV[t + 2 * i - 1], ARGV[t + 2 * i]}
end
add_events(KEYS[14], t + 2 * tonumber(ARGV[t]) + 1)
local due = tonumber(ARGV[5])
if due > 0 then
  hold(KEYS[1], tasks)
  redis.call('ZADD', KEYS[6], due, id)
  redis.call('HSET', KEYS[1], 'reason', ARGV[6])
  return {'delayed', id, ARGV[6]}
end
local q = {name = ARGV[2], limit = tonumber(ARGV[3]), waiting = KEYS[7], active = KEYS[8],
           waiting_queues = KEYS[10], paused = KEYS[11]}
local outcome, why = admit_or_wait(KEYS[1], id, q, KEYS[9], tonumber(ARGV[4]), KEYS[5], tasks,
                                   ARGV[7], false)
return {outcome, id, why or ''}
