-- release_holder: releases a dedup key held by a run that has finished or is gone, atomically
-- with the check. A release by the previous version (a worker or coordinator not yet
-- upgraded, finishing a run this version queued) does not know the 12-byte fields of this
-- version (lua/holders.lua) and leaves them: without this sweep such a key would hold off new
-- runs of the same DAG and params for good.
-- KEYS[1] dedup holders HASH   KEYS[2] the holder's run hash
-- ARGV[1] the field (either form)   ARGV[2] the run id it held when the caller read it
-- Returns 1 when released; 0 when the field no longer names that run, or the run is active.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
local status = redis.call('HGET', KEYS[2], 'status')
if status == 'queued' or status == 'running' then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
