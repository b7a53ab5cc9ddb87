-- admit: admit the runs at the head of one queue's waiting set while capacity allows, in
-- waiting order (priority, then submit time). A run held back only by its DAG's maxActiveRuns
-- is passed over so the runs behind it are not blocked; a paused queue or a full queue stops.
-- KEYS[1] waiting ZSET of the queue   KEYS[2] active SET of the queue
-- KEYS[3] queues-with-waiting-runs SET   KEYS[4] paused queues SET
-- then per candidate i (from 1): KEYS[2 + 3i] its run hash, KEYS[3 + 3i] its DAG's active SET,
-- KEYS[4 + 3i] the ready stream of its priority and worker selector
-- ARGV[1] queue name   ARGV[2] queue maxConcurrency (0: none)
-- then per candidate i: ARGV[1 + 2i] run id, ARGV[2 + 2i] its DAG's maxActiveRuns (0: none)
-- Returns the number of runs admitted.
local q = {name = ARGV[1], limit = tonumber(ARGV[2]), waiting = KEYS[1], active = KEYS[2],
           waiting_queues = KEYS[3], paused = KEYS[4]}
local admitted = 0
local c = (#ARGV - 2) / 2
for i = 1, c do
  local id = ARGV[1 + 2 * i]
  local run = KEYS[2 + 3 * i]
  local active_dag = KEYS[3 + 3 * i]
  local dlimit = tonumber(ARGV[2 + 2 * i])
  if redis.call('ZSCORE', q.waiting, id) then
    local why = blocked(q, 0)
    if why then
      redis.call('HSET', run, 'reason', why)
      break
    end
    why = dag_blocked(active_dag, dlimit)
    if why then
      redis.call('HSET', run, 'reason', why)
    else
      redis.call('ZREM', q.waiting, id)
      admit(run, id, q, active_dag, dlimit, KEYS[4 + 3 * i], take_held(run))
      admitted = admitted + 1
    end
  end
end
if redis.call('ZCARD', q.waiting) == 0 then
  redis.call('SREM', q.waiting_queues, q.name)
end
return admitted
