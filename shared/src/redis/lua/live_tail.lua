-- live_tail: a worker publishes the tail of a step that is still running (for `dagrid logs -f`).
-- KEYS[1] log tail key (HASH: tail, size, attempt)
-- ARGV[1] log tail (bytes)   ARGV[2] total bytes of output so far   ARGV[3] attempt number
-- Kept unless a later attempt's tail is already stored (this attempt was reclaimed); a tail
-- key of an older version (a STRING) is replaced. Returns 1 when stored, 0 when not.
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'hash' then
  local held = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
  if held ~= nil and held > tonumber(ARGV[3]) then
    return 0
  end
elseif kind ~= 'none' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'tail', ARGV[1], 'size', ARGV[2], 'attempt', ARGV[3])
return 1
