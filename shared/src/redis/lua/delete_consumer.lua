-- delete_consumer: delete a dead worker's consumer from a ready stream's group, only if it
-- still holds no pending entry and its worker still sent no heartbeat since the cutoff. The
-- checks and the delete are one step: a worker back from a long partition that claims an
-- entry (or heartbeats) between the reaper's look and the delete keeps its consumer, so
-- XGROUP DELCONSUMER never drops an entry from the pending entries list (an entry dropped
-- there is pending for no one, never delivered again and never taken back).
-- KEYS[1] ready stream   KEYS[2] workers ZSET
-- ARGV[1] workers' consumer group   ARGV[2] consumer (worker id)
-- ARGV[3] cutoff (ms): a last heartbeat at or after it keeps the consumer
-- Returns 1 when deleted; 0 when it holds an entry or heartbeat since the cutoff.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
local seen = redis.call('ZSCORE', KEYS[2], ARGV[2])
if seen and tonumber(seen) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
