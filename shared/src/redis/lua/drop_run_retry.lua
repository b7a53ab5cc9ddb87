-- drop_run_retry: removes a due automatic run retry (`rr:<run id>` in the delayed set) that
-- turned out to have nothing to do (the run is gone, was retried by hand, or has no failed
-- step), and its `retryat` field. A compare-and-delete, so a replica that read the run before
-- it failed again never removes the retry scheduled since (its due time lies ahead).
-- KEYS[1] the delayed ZSET   KEYS[2] the run HASH
-- ARGV[1] member   ARGV[2] now (ms)   ARGV[3] the run's retry-at field name
-- Returns 1 when the member was removed, 0 when it is not due (kept).
local now = tonumber(ARGV[2])
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) > now then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
local at = redis.call('HGET', KEYS[2], ARGV[3])
if at and tonumber(at) <= now then
  redis.call('HDEL', KEYS[2], ARGV[3])
end
return 1
