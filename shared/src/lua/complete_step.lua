-- complete_step: a worker's final report on a step attempt. Adds the report to the results
-- stream, stores the log tail, and acknowledges and deletes the ready-stream entry, atomically,
-- so a report is never lost between the acknowledgement and the add.
-- KEYS[1] ready stream   KEYS[2] results stream   KEYS[3] log tail key
-- ARGV[1] workers' consumer group   ARGV[2] ready-stream entry id   ARGV[3] msgpack StepReport
-- ARGV[4] log tail (bytes)
-- Returns the number of entries acknowledged: 1, or 0 when this worker no longer held the entry
-- (the coordinator still decides from the report's token whether it counts).
redis.call('XADD', KEYS[2], '*', 'r', ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return acked
