-- complete_step: a worker's final report on a step attempt. Adds the report to the results
-- stream, stores the log tail, and acknowledges and deletes the ready-stream entry, atomically,
-- so a report is never lost between the acknowledgement and the add.
-- KEYS[1] ready stream   KEYS[2] results stream   KEYS[3] log tail key (HASH: tail, size, attempt)
-- ARGV[1] workers' consumer group   ARGV[2] ready-stream entry id   ARGV[3] msgpack StepReport
-- ARGV[4] log tail (bytes)   ARGV[5] total bytes of output   ARGV[6] attempt number
-- The tail is kept unless a later attempt's is already stored (a reclaimed attempt reporting
-- late); a tail key of an older version (a STRING) is replaced. An attempt that wrote nothing
-- stores nothing when no tail is stored (readers take a missing key for an empty tail), but
-- replaces an earlier attempt's tail, so a tail never passes for a later attempt's.
-- Returns the number of entries acknowledged: 1, or 0 when this worker no longer held the entry
-- (the coordinator still decides from the report's token whether it counts).
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3])
-- One HGET: nil (false) when no tail is stored, an error for a STRING of an older version.
local held = redis.pcall('HGET', KEYS[3], 'attempt')
if type(held) == 'table' then
  redis.call('DEL', KEYS[3])
  held = false
end
held = held and tonumber(held)
if (held and held <= tonumber(ARGV[6])) or (not held and tonumber(ARGV[5]) > 0) then
  redis.call('HSET', KEYS[3], 'tail', ARGV[4], 'size', ARGV[5], 'attempt', ARGV[6])
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return acked
