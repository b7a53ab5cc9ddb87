-- admit: admit the runs at the head of one queue's waiting set while capacity allows, in
-- waiting order (priority, then submit time). A run held back only by its DAG's maxActiveRuns
-- is passed over so the runs behind it are not blocked; a paused queue or a full queue stops.
-- KEYS[1] waiting ZSET of the queue   KEYS[2] active SET of the queue
-- KEYS[3] queues-with-waiting-runs SET   KEYS[4] paused queues SET
-- KEYS[5] .. KEYS[14] the ready streams of priorities 9 down to 0
-- then per candidate i (from 1): KEYS[13 + 2i] its run hash, KEYS[14 + 2i] its DAG's active SET
-- ARGV[1] queue name   ARGV[2] queue maxConcurrency (0: none)
-- then per candidate i: ARGV[1 + 2i] run id, ARGV[2 + 2i] its DAG's maxActiveRuns (0: none)
-- Returns the number of runs admitted.
local q = {name = ARGV[1], limit = tonumber(ARGV[2]), waiting = KEYS[1], active = KEYS[2],
           waiting_queues = KEYS[3], paused = KEYS[4]}
local admitted = 0
local c = (#ARGV - 2) / 2
for i = 1, c do
  local id = ARGV[1 + 2 * i]
  local run = KEYS[13 + 2 * i]
  local active_dag = KEYS[14 + 2 * i]
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
      local pri = tonumber(redis.call('HGET', run, 'pri') or '5')
      redis.call('ZREM', q.waiting, id)
      admit(run, id, q, active_dag, dlimit, KEYS[5 + (9 - pri)], take_held(run))
      admitted = admitted + 1
    end
  end
end
if redis.call('ZCARD', q.waiting) == 0 then
  redis.call('SREM', q.waiting_queues, q.name)
end
return admitted
