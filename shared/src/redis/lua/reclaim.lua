-- reclaim: take back one ready-stream entry whose worker is dead (or that its live worker does
-- not know it holds) and report the attempt lost, atomically. The entry must still be pending
-- for `owner` and idle for at least ARGV[4]; unless ARGV[6] is 0, the owner's last heartbeat
-- (its score in the workers ZSET) must also be older than ARGV[6] or absent.
-- A live worker keeps its entries' idle time below the lease (XCLAIM ... JUSTID to itself on
-- every heartbeat), so an entry that passes both checks belongs to a worker that stopped. The
-- entry is acknowledged and deleted, and the report (kind `lost`, built by the caller from
-- the entry's task) is added to the results stream, where a coordinator applies it like any
-- report: the step runs again as a new attempt with a new token, and the old owner, if it
-- ever comes back, finds its claim gone (XCLAIM returns nothing) and stops the process.
-- KEYS[1] ready stream   KEYS[2] results stream   KEYS[3] workers ZSET
-- ARGV[1] workers' consumer group   ARGV[2] entry id   ARGV[3] owner (consumer name)
-- ARGV[4] least idle time (ms)   ARGV[5] msgpack StepReport of kind lost
-- ARGV[6] lease (ms) the owner's heartbeat must be older than; 0: the owner may be alive (an
-- entry a live worker has not refreshed for two leases is one it never learnt it claimed, for
-- example because the reply to its XREADGROUP was lost with the connection)
-- Returns 1 when reclaimed; 0 when the entry is no longer pending for the owner, not idle
-- long enough, or the owner sent a heartbeat within the lease.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
local p = pending[1]
if not p or p[2] ~= ARGV[3] then
  return 0
end
if tonumber(p[3]) < tonumber(ARGV[4]) then
  return 0
end
local lease = tonumber(ARGV[6])
if lease == 0 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[5])
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('ZSCORE', KEYS[3], ARGV[3])
if seen and tonumber(seen) > now - lease then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'r', ARGV[5])
return 1
