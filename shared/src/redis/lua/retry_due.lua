-- retry_due: the backoff of a retrying step has passed; queue its next attempt, atomically.
-- Several coordinators may see the same due retry: only the one whose ZREM wins queues it.
-- KEYS[1] delayed ZSET   KEYS[2] run hash   KEYS[3] the step's ready stream (of the run's
-- priority and the step's worker selector, shared/src/dag Dag::selector_of)
-- KEYS[4] events stream
-- ARGV[1] the delayed-set member (s:<run id>:<step>)   ARGV[2] step name   ARGV[3] run id
-- ARGV[4] events stream cap
-- Appends the step's `queued` event (attempt read from its stored StepState).
-- Returns 'queued', or 'gone' when another coordinator took it first or the retry was
-- cancelled (the run was stopped or finished; its fields r:/rs: are then gone).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 'gone'
end
local step = ARGV[2]
local task = redis.call('HGET', KEYS[2], 'r:' .. step)
local state = redis.call('HGET', KEYS[2], 'rs:' .. step)
redis.call('HDEL', KEYS[2], 'r:' .. step, 'rs:' .. step)
if not task or not state then
  return 'gone'
end
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'queued' and status ~= 'running' then
  return 'gone'
end
redis.call('HSET', KEYS[2], 's:' .. step, state)
redis.call('HINCRBY', KEYS[2], 'ver', 1)
local entry = redis.call('XADD', KEYS[3], '*', 't', task)
redis.call('HSET', KEYS[2], 'e:' .. step, entry)
local ok, decoded = pcall(cmsgpack.unpack, state)
local attempt = ''
if ok and type(decoded) == 'table' then
  -- `a` in the stored form (shared/src/stored.rs), `attempt` in states older versions wrote
  local n = decoded.a or decoded.attempt
  if n then
    attempt = tostring(n)
  end
end
add_event(KEYS[4], ARGV[3], redis.call('HGET', KEYS[2], 'dag') or '', step, 'queued', attempt,
  '')
trim_events(KEYS[4], ARGV[4])
return 'queued'
