-- admit: admit the runs at the head of one queue's waiting set while capacity allows, in
-- waiting order (priority, then submit time). A run held back only by its DAG's maxActiveRuns
-- is passed over so the runs behind it are not blocked; a paused queue or a full queue stops.
-- KEYS[1] waiting ZSET of the queue   KEYS[2] active SET of the queue
-- KEYS[3] queues-with-waiting-runs SET   KEYS[4] paused queues SET
-- then per candidate, in order: its run hash, its DAG's active SET, then its s ready streams
-- (at its priority: its own, of its DAG-level worker selector, then those of its steps' own
-- selectors, in Dag::selectors order; its held tasks name theirs by index, field hq:<i>)
-- ARGV[1] queue name   ARGV[2] queue maxConcurrency (0: none)
-- then per candidate: run id, its DAG's maxActiveRuns (0: none), s (at least 1)
-- Returns {admitted, stopped}: the number of runs admitted, and 1 when the queue (paused or
-- full) stopped the pass, 0 when every candidate was considered.
local q = {name = ARGV[1], limit = tonumber(ARGV[2]), waiting = KEYS[1], active = KEYS[2],
           waiting_queues = KEYS[3], paused = KEYS[4]}
local admitted, stopped = 0, 0
local a, k = 3, 5
while a <= #ARGV do
  local id = ARGV[a]
  local dlimit = tonumber(ARGV[a + 1])
  local s = tonumber(ARGV[a + 2])
  local run = KEYS[k]
  local active_dag = KEYS[k + 1]
  local streams = {}
  for j = 1, s do
    streams[j] = KEYS[k + 1 + j]
  end
  a = a + 3
  k = k + 2 + s
  if redis.call('ZSCORE', q.waiting, id) then
    local why = blocked(q, 0)
    if why then
      redis.call('HSET', run, 'reason', why)
      stopped = 1
      break
    end
    why = dag_blocked(active_dag, dlimit)
    if why then
      redis.call('HSET', run, 'reason', why)
    else
      local tasks, ix = take_held(run, streams)
      if tasks then
        redis.call('ZREM', q.waiting, id)
        admit(run, id, q, active_dag, dlimit, streams, tasks)
        admitted = admitted + 1
      else
        redis.call('HSET', run, 'reason', unpassed(ix))
      end
    end
  end
end
if redis.call('ZCARD', q.waiting) == 0 then
  redis.call('SREM', q.waiting_queues, q.name)
end
return {admitted, stopped}
