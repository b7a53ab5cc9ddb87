-- fan: the fan hash of a call step's attempt (Keys::fan), which lua/apply_transition.lua's
-- section p fills as the attempt's child runs finish.
-- KEYS[1] the step's fan HASH   KEYS[2] results stream
-- ARGV[1] the attempt's fencing token   ARGV[2] `<parent run id>` LF `<step>` (the text of the
-- results-stream entry `c` that says every child finished)
-- then, to arm it, triples: child run id, its item indexes (`0,3`), its msgpack ChildResult
-- when the child had finished already (a child deduplicated onto a finished run), else ''.
-- Without triples (before the children are created): makes the hash the attempt's, emptying
-- one of another attempt (a retry of the step); returns 0.
-- With triples: returns -1 when the hash is another attempt's (nothing written); else records
-- the children (c:<id>), `n` (how many) and `d` (how many have a result), adds the `c` entry to
-- KEYS[2] when all have one, and returns n - d. Arming again with the same children (a
-- coordinator replaced half-way) changes nothing.
local fan, token = KEYS[1], ARGV[1]
local held = redis.call('HGET', fan, 'tok')
if #ARGV < 3 then
  if held ~= token then
    redis.call('DEL', fan)
    redis.call('HSET', fan, 'tok', token)
  end
  return 0
end
if held ~= token then
  return -1
end
local n, done = 0, 0
for j = 3, #ARGV, 3 do
  local id = ARGV[j]
  n = n + 1
  redis.call('HSET', fan, 'c:' .. id, ARGV[j + 1])
  if ARGV[j + 2] ~= '' then
    redis.call('HSETNX', fan, 'r:' .. id, ARGV[j + 2])
  end
  if redis.call('HEXISTS', fan, 'r:' .. id) == 1 then
    done = done + 1
  end
end
redis.call('HSET', fan, 'n', n, 'd', done)
if done >= n then
  redis.call('XADD', KEYS[2], '*', 'c', ARGV[2])
end
return n - done
