-- pending_slot: the newest cron slot of an `overlapPolicy: latest` DAG that waits for the
-- DAG's previous scheduled run to end (Dagu `latest`: all but the most recent missed slot are
-- discarded). One key, but a compare-and-set, so replicas never lose a newer slot.
-- KEYS[1] the pending HASH (DAG name -> slot ms)
-- ARGV[1] DAG name   ARGV[2] 'set' or 'clear'   ARGV[3] slot (ms)
-- set: records the slot unless a newer one is recorded; clear: deletes the record while it
-- holds that slot or an older one (a slot that fired or was skipped settles every older one).
-- Returns 1 when the hash changed, else 0.
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local slot = tonumber(ARGV[3])
if ARGV[2] == 'set' then
  if current < slot then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
    return 1
  end
  return 0
end
if current >= 0 and current <= slot then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
