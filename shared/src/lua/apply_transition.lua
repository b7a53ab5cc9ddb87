-- apply_transition: compare-and-set one run's state after its step reports (or a stop), queue
-- the steps that became ready, park retries in the delayed set, remove stopped steps' ready
-- entries, and acknowledge the reports, atomically. When the run finishes, it also leaves its
-- queue's and DAG's active sets, its queue's waiting set and the delayed set, and releases its
-- dedup key (or keeps it for the dedup window after a success).
-- KEYS[1] run hash      KEYS[2] ready stream of the run's priority      KEYS[3] results stream
-- KEYS[4] runs-by-status index of the old status   KEYS[5] runs-by-status index of the new status
-- KEYS[6] active SET of its queue   KEYS[7] active SET of its DAG   KEYS[8] its dedup key
-- KEYS[9] waiting ZSET of its queue   KEYS[10] delayed ZSET   KEYS[11] events stream
-- ARGV[1] expected value of the run's `ver` field   ARGV[2] coordinators' consumer group
-- ARGV[3] run id   ARGV[4] '' while the run goes on, else its final status, or 'reopen' when a
--   finished run becomes running again (a manual retry): it rejoins its queue's active set and
--   its DAG's (when the hash's `dlim` > 0), and takes its dedup key again if no run holds it
-- ARGV[5] 1 when the run holds the dedup key KEYS[8]   ARGV[6] dedup window after success (ms)
-- ARGV[7] workers' consumer group
-- then eight sections, each a count followed by its items:
--   a results-stream entry ids to acknowledge and delete
--   n hash field/value pairs to set
--   d hash fields to delete
--   k step tasks to queue on KEYS[2], as pairs: step name, msgpack StepTask (the entry id is
--     recorded in field e:<step>)
--   x ready-stream entry ids (on KEYS[2]) to acknowledge and delete
--   z delayed-set members to add, as pairs: member, due time (ms)
--   u delayed-set members to remove
--   e events to append to KEYS[11] (the section of add_events in lua/events.lua: the step
--     changes, then the run's status change)
-- Returns 0 when `ver` differs (another coordinator got there first; nothing written, the
-- reports stay pending and the caller re-reads the run and tries again); 1 when applied; 2 when
-- applied, the run finished and runs wait in its queue (the caller runs an admission pass).
local ver = redis.call('HGET', KEYS[1], 'ver')
if ver == false then
  ver = '0'
end
if ver ~= ARGV[1] then
  return 0
end
local id = ARGV[3]
local i = 8
-- a
local a = tonumber(ARGV[i])
for j = i + 1, i + a do
  redis.call('XACK', KEYS[3], ARGV[2], ARGV[j])
  redis.call('XDEL', KEYS[3], ARGV[j])
end
i = i + a + 1
-- n
local n = tonumber(ARGV[i])
if n > 0 then
  local fields = {}
  for j = i + 1, i + 2 * n do
    fields[#fields + 1] = ARGV[j]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
i = i + 2 * n + 1
-- d
local d = tonumber(ARGV[i])
if d > 0 then
  local fields = {}
  for j = i + 1, i + d do
    fields[#fields + 1] = ARGV[j]
  end
  redis.call('HDEL', KEYS[1], unpack(fields))
end
i = i + d + 1
-- k
local k = tonumber(ARGV[i])
for j = 1, k do
  local entry = redis.call('XADD', KEYS[2], '*', 't', ARGV[i + 2 * j])
  redis.call('HSET', KEYS[1], 'e:' .. ARGV[i + 2 * j - 1], entry)
end
i = i + 2 * k + 1
-- x
local x = tonumber(ARGV[i])
for j = i + 1, i + x do
  redis.call('XACK', KEYS[2], ARGV[7], ARGV[j])
  redis.call('XDEL', KEYS[2], ARGV[j])
end
i = i + x + 1
-- z
local z = tonumber(ARGV[i])
for j = 1, z do
  redis.call('ZADD', KEYS[10], ARGV[i + 2 * j], ARGV[i + 2 * j - 1])
end
i = i + 2 * z + 1
-- u
local u = tonumber(ARGV[i])
for j = i + 1, i + u do
  redis.call('ZREM', KEYS[10], ARGV[j])
end
i = i + u + 1
-- e
add_events(KEYS[11], i)
if KEYS[4] ~= KEYS[5] then
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[5], 0, id)
end
if ARGV[4] == '' then
  return 1
end
if ARGV[4] == 'reopen' then
  redis.call('SADD', KEYS[6], id)
  if tonumber(redis.call('HGET', KEYS[1], 'dlim') or '0') > 0 then
    redis.call('SADD', KEYS[7], id)
  end
  if ARGV[5] == '1' then
    local holder = redis.call('GET', KEYS[8])
    if holder == false then
      redis.call('SET', KEYS[8], id)
    elseif holder == id then
      redis.call('PERSIST', KEYS[8])
    end
  end
  return 1
end
redis.call('SREM', KEYS[6], id)
redis.call('SREM', KEYS[7], id)
redis.call('ZREM', KEYS[9], id)
redis.call('ZREM', KEYS[10], id)
if ARGV[5] == '1' and redis.call('GET', KEYS[8]) == id then
  local window = tonumber(ARGV[6])
  if ARGV[4] == 'succeeded' and window > 0 then
    redis.call('PEXPIRE', KEYS[8], window)
  else
    redis.call('DEL', KEYS[8])
  end
end
if redis.call('ZCARD', KEYS[9]) > 0 then
  return 2
end
return 1
