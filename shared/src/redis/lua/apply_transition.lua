-- apply_transition: compare-and-set one run's state after its step reports (or a stop), queue
-- the steps that became ready, park retries in the delayed set, remove stopped steps' ready
-- entries, and acknowledge the reports, atomically. When the run finishes, it also leaves its
-- queue's active set (and its DAG's, when it has one), its queue's waiting set and the delayed
-- set (when it was still queued), and releases its dedup key (or keeps it for the dedup window
-- after a success).
-- KEYS[1] run hash      KEYS[2] the run's own ready stream (of its priority and DAG-level worker
-- selector: stream index 0)      KEYS[3] results stream
-- KEYS[4] runs-by-status index of the old status   KEYS[5] runs-by-status index of the new status
-- KEYS[6] active SET of its queue   KEYS[7] active SET of its DAG   KEYS[8] its dedup key (the
--   STRING of a window hold, or of an active run of an earlier version; its last 24
--   characters, the digest, name its field in the dedup holders HASH: holder_field in
--   lua/holders.lua, or the digest itself for a holder taken by the previous version)
-- KEYS[9] waiting ZSET of its queue   KEYS[10] delayed ZSET   KEYS[11] events stream
-- ARGV[1] expected value of the run's `ver` field   ARGV[2] coordinators' consumer group
-- ARGV[3] run id   ARGV[4] '' while the run goes on, else its final status, or 'reopen' when a
--   finished run becomes running again (a manual retry): it rejoins its queue's active set and
--   its DAG's (when ARGV[8] = 1), and takes its dedup key again if no run holds it
-- ARGV[5] 1 when the run holds the dedup key KEYS[8]   ARGV[6] dedup window after success (ms)
-- ARGV[7] workers' consumer group   ARGV[8] 1 when the run counts in its DAG's active set
-- KEYS[7] (its `dlim` > 0)   ARGV[9] 1 when the run may wait in KEYS[9] or, delayed, in
-- KEYS[10] (it is `queued` and not known to be admitted)
-- ARGV[10] '' when the caller admits waiting runs itself (a coordinator), else the run's
-- queue: a worker applying its own reports leaves that to the coordinators, so when the run
-- finishes and runs wait in its queue, an admission request (field `a` = the queue) is added
-- to the results stream KEYS[3], in the same atomic step
-- ARGV[11] s: the number of ready streams of its steps' own worker selectors (at the run's
--   priority, in Dag::selectors order after the DAG's), KEYS[12 .. 11 + s] (stream index 1 .. s)
-- KEYS[12 + s ..] the log tail keys of section l, in its order, then KEYS[12 + s + l] the
-- dedup holders HASH (digest -> the active run holding it)
-- then, when section p has an item, KEYS[#KEYS]: the parent's fan HASH (Keys::fan)
-- then ten sections, each a count followed by its items:
--   a results-stream entry ids to acknowledge and delete
--   n hash field/value pairs to set (`ver` is set with them, to ARGV[1] + 1)
--   d hash fields to delete (deleted first: then the fields of n, `ver` and the entries of k
--     are set in one HSET)
--   k step tasks to queue, as triples: step name, the index of its ready stream (0: KEYS[2],
--     j: KEYS[11 + j]), msgpack StepTask (the entry id is recorded in field e:<step>, in the
--     same HSET)
--   x ready-stream entries to acknowledge and delete, as pairs: stream index, entry id
--   l log tails of finished attempts (a worker applying its own reports), as triples: tail
--     (bytes), total bytes of output, attempt; the j-th is stored in KEYS[11 + s + j] (a HASH:
--     tail, size, attempt) unless a later attempt's is already stored; an attempt that wrote
--     nothing stores nothing when no tail is stored, but replaces an earlier attempt's; a tail
--     key of an older version (a STRING) is replaced (as lua/complete_step.lua does)
--   z delayed-set members to add, as pairs: member, due time (ms)
--   u delayed-set members to remove
--   e entries to append to KEYS[11] (the section of add_events in lua/events.lua: the
--     step changes, the run's status change riding on one of them, packed by the caller)
--   p 0, or 1 for a child run this transition finishes, then: its msgpack ChildResult, and
--     `<parent run id>` LF `<step>`. When the fan hash KEYS[#KEYS] is still for an attempt
--     (has `tok`), the result is stored as `r:<id>`; when the child is one the attempt waits
--     for (`c:<id>`), `d` counts it (once), and once `d` reaches `n` a `c` entry (the text)
--     is added to the results stream KEYS[3] for a coordinator to finish the parent's step
-- Each section is one command per key (one XACK and one XDEL per stream, one HSET, one HDEL, one ZADD, one
-- ZREM), whatever its count, plus one XADD per queued task and per event, and one HGET (and
-- at most one HSET) per log tail.
-- Returns 0 when `ver` differs (another coordinator got there first; nothing written, the
-- reports stay pending and the caller re-reads the run and tries again); 1 when applied; 2 when
-- applied, the run finished and runs wait in its queue (the caller runs an admission pass, or,
-- with ARGV[10] set, the admission request was added).
local ver = redis.call('HGET', KEYS[1], 'ver') or '0'
if ver ~= ARGV[1] then
  return 0
end
local id = ARGV[3]
-- Pushes ARGV[from..to] onto `args`.
local function append(args, from, to)
  for j = from, to do
    args[#args + 1] = ARGV[j]
  end
  return args
end
-- The run's ready streams, by index.
local s = tonumber(ARGV[11])
local streams = {KEYS[2]}
for j = 1, s do
  streams[j + 1] = KEYS[11 + j]
end
-- Every stream index of sections k and x must be passed: checked before anything is written.
do
  local at = 12
  at = at + tonumber(ARGV[at]) + 1
  at = at + 2 * tonumber(ARGV[at]) + 1
  at = at + tonumber(ARGV[at]) + 1
  local k = tonumber(ARGV[at])
  for j = 1, k do
    stream_at(streams, ARGV[at + 3 * j - 1])
  end
  at = at + 3 * k + 1
  for j = 1, tonumber(ARGV[at]) do
    stream_at(streams, ARGV[at + 2 * j - 1])
  end
end
local i = 12
-- a
local a = tonumber(ARGV[i])
if a > 0 then
  redis.call('XACK', KEYS[3], ARGV[2], unpack(append({}, i + 1, i + a)))
  redis.call('XDEL', KEYS[3], unpack(append({}, i + 1, i + a)))
end
i = i + a + 1
-- n (written below, with `ver` and the entries of the tasks queued)
local n = tonumber(ARGV[i])
local fields = append({'ver', tonumber(ver) + 1}, i + 1, i + 2 * n)
i = i + 2 * n + 1
-- d
local d = tonumber(ARGV[i])
if d > 0 then
  redis.call('HDEL', KEYS[1], unpack(append({}, i + 1, i + d)))
end
i = i + d + 1
-- k
local k = tonumber(ARGV[i])
for j = 1, k do
  local entry = redis.call('XADD', stream_at(streams, ARGV[i + 3 * j - 1]), '*', 't', ARGV[i + 3 * j])
  fields[#fields + 1] = 'e:' .. ARGV[i + 3 * j - 2]
  fields[#fields + 1] = entry
end
redis.call('HSET', KEYS[1], unpack(fields))
i = i + 3 * k + 1
-- x
local x = tonumber(ARGV[i])
if x > 0 then
  local by_stream, order = {}, {}
  for j = 1, x do
    local key = stream_at(streams, ARGV[i + 2 * j - 1])
    if not by_stream[key] then
      by_stream[key] = {}
      order[#order + 1] = key
    end
    table.insert(by_stream[key], ARGV[i + 2 * j])
  end
  for _, key in ipairs(order) do
    redis.call('XACK', key, ARGV[7], unpack(by_stream[key]))
    redis.call('XDEL', key, unpack(by_stream[key]))
  end
end
i = i + 2 * x + 1
-- l
local l = tonumber(ARGV[i])
local holders = KEYS[12 + s + l]
for j = 1, l do
  local key = KEYS[11 + s + j]
  local at = i + 3 * (j - 1)
  -- One HGET: nil (false) when no tail is stored, an error for a STRING of an older version.
  local held = redis.pcall('HGET', key, 'attempt')
  if type(held) == 'table' then
    redis.call('DEL', key)
    held = false
  end
  held = held and tonumber(held)
  local attempt = tonumber(ARGV[at + 3])
  if (held and held <= attempt) or (not held and tonumber(ARGV[at + 2]) > 0) then
    redis.call('HSET', key, 'tail', ARGV[at + 1], 'size', ARGV[at + 2], 'attempt', ARGV[at + 3])
  end
end
i = i + 3 * l + 1
-- z
local z = tonumber(ARGV[i])
if z > 0 then
  local scored = {}
  for j = 1, z do
    scored[#scored + 1] = ARGV[i + 2 * j]
    scored[#scored + 1] = ARGV[i + 2 * j - 1]
  end
  redis.call('ZADD', KEYS[10], unpack(scored))
end
i = i + 2 * z + 1
-- u
local u = tonumber(ARGV[i])
if u > 0 then
  redis.call('ZREM', KEYS[10], unpack(append({}, i + 1, i + u)))
end
i = i + u + 1
-- e
i = add_events(KEYS[11], i)
-- p
if tonumber(ARGV[i] or '0') > 0 and ARGV[4] ~= '' and ARGV[4] ~= 'reopen' then
  local fan = KEYS[#KEYS]
  if redis.call('HEXISTS', fan, 'tok') == 1 then
    local added = redis.call('HSET', fan, 'r:' .. id, ARGV[i + 1])
    if redis.call('HEXISTS', fan, 'c:' .. id) == 1 then
      local done = tonumber(redis.call('HGET', fan, 'd') or '0')
      if added == 1 then
        done = redis.call('HINCRBY', fan, 'd', 1)
      end
      local expected = tonumber(redis.call('HGET', fan, 'n') or '0')
      if expected > 0 and done >= expected then
        redis.call('XADD', KEYS[3], '*', 'c', ARGV[i + 2])
      end
    end
  end
end
if KEYS[4] ~= KEYS[5] then
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZADD', KEYS[5], 0, id)
end
if ARGV[4] == '' then
  return 1
end
if ARGV[4] == 'reopen' then
  redis.call('SADD', KEYS[6], id)
  if ARGV[8] == '1' then
    redis.call('SADD', KEYS[7], id)
  end
  if ARGV[5] == '1' then
    -- The key again, as a holders field, unless another run holds it; a window hold of its
    -- own becomes that field.
    local field = holder_field(KEYS[8])
    if not field then
      -- A key named before dedup keys were digests: taken again as the STRING it was.
      local holder = redis.call('GET', KEYS[8])
      if holder == false then
        redis.call('SET', KEYS[8], id)
      end
      return 1
    end
    local got = redis.call('HMGET', holders, field, string.sub(KEYS[8], -24))
    if got[1] == false and got[2] == false then
      local holder = redis.call('GET', KEYS[8])
      if holder == id then
        redis.call('DEL', KEYS[8])
      end
      if holder == false or holder == id then
        redis.call('HSET', holders, field, id)
      end
    end
  end
  return 1
end
redis.call('SREM', KEYS[6], id)
if ARGV[8] == '1' then
  redis.call('SREM', KEYS[7], id)
end
if ARGV[9] == '1' then
  redis.call('ZREM', KEYS[9], id)
  redis.call('ZREM', KEYS[10], id)
end
if ARGV[5] == '1' then
  -- Released, or held for the dedup window after a success: a STRING with a TTL.
  local window = tonumber(ARGV[6])
  local kept = ARGV[4] == 'succeeded' and window > 0
  local field, digest = holder_field(KEYS[8]), string.sub(KEYS[8], -24)
  local got = {false, false}
  if field then
    got = redis.call('HMGET', holders, field, digest)
  end
  if got[1] == id or got[2] == id then
    -- (A holder of the previous version is the field of the digest itself.)
    redis.call('HDEL', holders, got[1] == id and field or digest)
    if kept then
      redis.call('SET', KEYS[8], id, 'PX', window)
    end
  elseif redis.call('GET', KEYS[8]) == id then
    -- The key of a run queued by an earlier version.
    if kept then
      redis.call('PEXPIRE', KEYS[8], window)
    else
      redis.call('DEL', KEYS[8])
    end
  end
end
if redis.call('ZCARD', KEYS[9]) > 0 then
  if ARGV[10] ~= '' then
    redis.call('XADD', KEYS[3], '*', 'a', ARGV[10])
  end
  return 2
end
return 1
