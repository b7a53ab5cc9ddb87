-- create_run: store a new run, index it and queue its first steps, atomically.
-- KEYS[1] run hash            KEYS[2] runs index (ZSET)     KEYS[3] runs-by-DAG index (ZSET)
-- KEYS[4] runs-by-status index (ZSET)                       KEYS[5] ready stream
-- ARGV[1] run id
-- ARGV[2] n, the number of hash field/value pairs, then ARGV[3 .. 2+2n] the pairs
-- ARGV[3+2n] k, the number of step tasks, then k msgpack StepTask payloads
-- Returns 1 when the run was created, 0 when a run with this id exists already (nothing written).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local id = ARGV[1]
local n = tonumber(ARGV[2])
local fields = {}
for i = 3, 2 + 2 * n do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], 0, id)
redis.call('ZADD', KEYS[3], 0, id)
redis.call('ZADD', KEYS[4], 0, id)
local t = 3 + 2 * n
local k = tonumber(ARGV[t])
for i = t + 1, t + k do
  redis.call('XADD', KEYS[5], '*', 't', ARGV[i])
end
return 1
