-- submit: create a run, deduplicated and admitted (or delayed, or waiting), atomically.
-- KEYS[1] run hash   KEYS[2] runs index   KEYS[3] runs-by-DAG index   KEYS[4] runs-by-status
-- index (queued)   KEYS[5] the ready stream of the run's priority   KEYS[6] delayed ZSET
-- KEYS[7] waiting ZSET of its queue   KEYS[8] active SET of its queue   KEYS[9] active SET of its
-- DAG   KEYS[10] queues-with-waiting-runs SET   KEYS[11] paused queues SET
-- KEYS[12] dedup key (used when ARGV[8] = 1)   KEYS[13] cron-slot key (used when ARGV[9] = 1)
-- KEYS[14] events stream
-- ARGV[1] run id   ARGV[2] queue name   ARGV[3] queue maxConcurrency (0: none)
-- ARGV[4] DAG maxActiveRuns when it applies apart from the queue (0: none)
-- ARGV[5] due time in ms (0: now)   ARGV[6] reason shown while delayed   ARGV[7] waiting score
-- ARGV[8] 1 to hold the dedup key   ARGV[9] 1 to claim the cron slot   ARGV[10] its TTL (ms)
-- ARGV[11] n, then n hash field/value pairs   then k, then k pairs: step name, msgpack StepTask
-- then the events of the new run (the section of add_events in lua/events.lua), written only
-- when the run is created
-- Returns {outcome, run id, reason}: outcome 'admitted', 'waiting' (with the reason it waits)
-- or 'delayed' for a new run;
-- 'deduplicated' with the id of the run holding the dedup key; 'fired' with the id of the run
-- the cron slot already started (or '' if none was created); 'exists' when the id is taken.
local id = ARGV[1]
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
local n = tonumber(ARGV[11])
local fields = {}
for i = 12, 11 + 2 * n do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, id)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], 0, id)
local t = 12 + 2 * n
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
