-- admission: functions shared by the scripts that admit runs (submit, promote, admit). This
-- file is prepended to each of them; it defines functions only and touches no key itself.
-- A run is admitted when its queue is not paused, no other run waits in its queue, the queue
-- has fewer active runs than its maxConcurrency and its DAG fewer than its maxActiveRuns (a
-- limit of 0 means none). Admitting moves the run's held root-step tasks to their ready streams.

-- A task is a triple {step name, msgpack StepTask, stream index}. A run's ready streams are
-- given as a list `streams` of keys in KEYS: index 0 (streams[1]) is the run's own (the
-- stream of its priority and DAG-level worker selector), the others those of its steps'
-- own selectors (shared/src/dag Dag::selectors); a task names its stream by its index.

-- The tasks held in a run hash (fields held, h:1 .. h:<held>, their step names hs:1 ..
-- hs:<held> and their stream indexes hq:1 .. hq:<held>, absent for 0), and removes them; or,
-- when a task names a stream that is not in `streams`, nil and the index, with nothing
-- removed (the run then stays where it is).
local function take_held(run, streams)
  local n = tonumber(redis.call('HGET', run, 'held') or '0')
  local tasks = {}
  for i = 1, n do
    local ix = redis.call('HGET', run, 'hq:' .. i) or '0'
    if not streams[tonumber(ix) + 1] then
      return nil, ix
    end
    tasks[#tasks + 1] = {redis.call('HGET', run, 'hs:' .. i) or '', redis.call('HGET', run, 'h:' .. i),
                         ix}
  end
  if n > 0 then
    local fields = {'held'}
    for i = 1, n do
      fields[#fields + 1] = 'h:' .. i
      fields[#fields + 1] = 'hs:' .. i
      fields[#fields + 1] = 'hq:' .. i
    end
    redis.call('HDEL', run, unpack(fields))
  end
  return tasks
end

-- Stores tasks in the run hash until the run is admitted.
local function hold(run, tasks)
  if #tasks == 0 then
    return
  end
  local fields = {'held', #tasks}
  for i, t in ipairs(tasks) do
    fields[#fields + 1] = 'h:' .. i
    fields[#fields + 1] = t[2]
    fields[#fields + 1] = 'hs:' .. i
    fields[#fields + 1] = t[1]
    if tostring(t[3]) ~= '0' then
      fields[#fields + 1] = 'hq:' .. i
      fields[#fields + 1] = t[3]
    end
  end
  redis.call('HSET', run, unpack(fields))
end

-- Queues tasks on their ready streams (of `streams`) and records each entry id in the run
-- hash (e:<step>), so a stop or the reconciler finds the entry without scanning the stream.
local function enqueue(run, streams, tasks)
  for _, t in ipairs(tasks) do
    local entry = redis.call('XADD', stream_at(streams, t[3]), '*', 't', t[2])
    if t[1] ~= '' then
      redis.call('HSET', run, 'e:' .. t[1], entry)
    end
  end
end

-- Why a run of `queue` cannot be admitted now, or nil when it can, from the counts: whether
-- the queue is paused, the runs already waiting that it must not overtake (`behind`) and the
-- queue's active runs (read only when it has a limit).
local function blocked_by(q, paused, behind, active)
  if paused then
    return 'queue ' .. q.name .. ' is paused'
  end
  if behind > 0 then
    return 'waiting behind ' .. behind .. ' run(s) of queue ' .. q.name
  end
  if q.limit > 0 and active >= q.limit then
    return 'queue ' .. q.name .. ' has its maxConcurrency of ' .. q.limit .. ' run(s) active'
  end
  return nil
end

-- Why a run of `queue` cannot be admitted now, or nil when it can. `behind` counts the runs
-- already waiting that it must not overtake (the submit path; the admit pass passes 0).
local function blocked(q, behind)
  local paused = redis.call('SISMEMBER', q.paused, q.name) == 1
  local active = 0
  if not paused and behind == 0 and q.limit > 0 then
    active = redis.call('SCARD', q.active)
  end
  return blocked_by(q, paused, behind, active)
end

-- The reason a run waits for its DAG's maxActiveRuns.
local function dag_limit_reason(dlimit)
  return "its DAG has its maxActiveRuns of " .. dlimit .. " run(s) active"
end

-- Why the DAG's maxActiveRuns holds the run back, or nil.
local function dag_blocked(active_dag, dlimit)
  if dlimit > 0 and redis.call('SCARD', active_dag) >= dlimit then
    return dag_limit_reason(dlimit)
  end
  return nil
end

-- Admits a run: counts it active and queues its tasks on their ready streams (of `streams`).
local function admit(run, id, q, active_dag, dlimit, streams, tasks)
  redis.call('SADD', q.active, id)
  if dlimit > 0 then
    redis.call('SADD', active_dag, id)
  end
  enqueue(run, streams, tasks)
  redis.call('HDEL', run, 'reason')
end

-- The reason of a run whose held task names a ready stream the caller did not pass (its DAG
-- version could not be read): it waits, and the next admission pass tries again.
local function unpassed(ix)
  return 'ready stream ' .. ix .. ' of a held task was not passed to the admission'
end

-- Puts a run in its queue's waiting set, ordered by `score` (priority, then submit time).
local function wait(run, id, q, score, reason)
  redis.call('ZADD', q.waiting, score, id)
  redis.call('SADD', q.waiting_queues, q.name)
  redis.call('HSET', run, 'reason', reason)
end

-- Admits the run if it can be, else makes it wait. Returns 'admitted', or 'waiting' and why.
local function admit_or_wait(run, id, q, active_dag, dlimit, streams, tasks, score, from_hash)
  local why = blocked(q, redis.call('ZCARD', q.waiting)) or dag_blocked(active_dag, dlimit)
  if why then
    if not from_hash then
      hold(run, tasks)
    end
    wait(run, id, q, score, why)
    return 'waiting', why
  end
  if from_hash then
    local ix
    tasks, ix = take_held(run, streams)
    if not tasks then
      why = unpassed(ix)
      wait(run, id, q, score, why)
      return 'waiting', why
    end
  end
  admit(run, id, q, active_dag, dlimit, streams, tasks)
  return 'admitted'
end
