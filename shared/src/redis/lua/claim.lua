-- claim: a worker takes up to `count` new ready entries, highest priority level first, in one
-- round trip. Reads each non-empty level with a non-blocking XREADGROUP (BLOCK is refused in
-- scripts) and moves to the next level only while the levels above have fewer entries than still
-- wanted, so the entries returned are the `count` most urgent ones, oldest first within a
-- level. Each stays in the group's pending list, owned by the consumer, like any XREADGROUP.
-- KEYS[1..n] the ready streams, highest priority first
-- ARGV[1] workers' consumer group   ARGV[2] consumer (worker id)   ARGV[3] count (at least 1)
-- Returns a flat array of triples: stream key, entry id, field `t` (nil when the entry has no
-- field `t`; such entries are returned anyway, so that the worker acknowledges and deletes
-- them), in claim order. Empty when every level is empty.
-- Errors: when a level cannot be read (NOGROUP: the stream or its group is gone) before any
-- entry was taken, that error, with nothing claimed; after some were taken, the entries taken
-- so far (the next call reports the error).
local wanted = tonumber(ARGV[3])
local out = {}
for _, key in ipairs(KEYS) do
  if wanted <= 0 then
    break
  end
  -- An empty stream (entries are deleted once acknowledged) has nothing new: one XLEN
  -- instead of a group read. A missing stream reads 0 too; the blocking read that follows an
  -- empty claim reports NOGROUP then.
  local reply = false
  if redis.call('XLEN', key) > 0 then
    reply = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', wanted,
      'STREAMS', key, '>')
  end
  if type(reply) == 'table' and reply.err then
    if #out == 0 then
      return reply
    end
    break
  end
  if reply then
    for _, entry in ipairs(reply[1][2]) do
      local t = false
      local fields = entry[2]
      if fields then
        for i = 1, #fields, 2 do
          if fields[i] == 't' then
            t = fields[i + 1]
            break
          end
        end
      end
      out[#out + 1] = key
      out[#out + 1] = entry[1]
      out[#out + 1] = t
      wanted = wanted - 1
    end
  end
end
return out
