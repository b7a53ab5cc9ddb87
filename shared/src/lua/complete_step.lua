-- complete_step: a worker's final report on a step attempt. Adds the report to the results
-- stream, stores the log tail, and acknowledges and deletes the ready-stream entry, atomically,
-- so a report is never lost between the acknowledgement and the add.
-- KEYS[1] ready stream   KEYS[2] results stream   KEYS[3] log tail key (HASH: tail, size, attempt)
-- ARGV[1] workers' consumer group   ARGV[2] ready-stream entry id   ARGV[3] msgpack StepReport
-- ARGV[4] log tail (bytes)   ARGV[5] total bytes of output   ARGV[6] attempt number
-- The tail is kept unless a later attempt's is already stored (a reclaimed attempt reporting
-- late); a tail key of an older version (a STRING) is replaced.
-- Returns the number of entries acknowledged: 1, or 0 when this worker no longer held the entry
-- (the coordinator still decides from the report's token whether it counts).
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3])
local kind = redis.call('TYPE', KEYS[3]).ok
local held = nil
if kind == 'hash' then
  held = tonumber(redis.call('HGET', KEYS[3], 'attempt'))
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[3])
end
if held == nil or held <= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[3], 'tail', ARGV[4], 'size', ARGV[5], 'attempt', ARGV[6])
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return acked
