-- submit: create a chunk of runs of one DAG version, queue and priority, each deduplicated and
-- admitted (or delayed, or waiting), in request order, atomically. What the runs share (queue,
-- limits, DAG, the run hash fields they have in common, the Idempotency-Key record) is passed
-- once; each run costs one HSET of its hash, its index entries, its ready entry and its event.
-- KEYS[1] unused (was the all-runs index)   KEYS[2] runs-by-DAG index   KEYS[3] runs-by-status index (queued)
-- KEYS[4] the ready stream of the chunk's priority   KEYS[5] delayed ZSET
-- KEYS[6] waiting ZSET of the queue   KEYS[7] active SET of the queue   KEYS[8] active SET of
-- the DAG   KEYS[9] queues-with-waiting-runs SET   KEYS[10] paused queues SET
-- KEYS[11] events stream   KEYS[12] idempotency record HASH (used when ARGV[4] is not '')
-- then per run i (from 1): KEYS[10 + 3i] its run hash, KEYS[11 + 3i] its dedup key (used with
-- flag 'd'), KEYS[12 + 3i] its cron-slot key (used with flag 'c')
-- ARGV[1] queue name   ARGV[2] queue maxConcurrency (0: none)   ARGV[3] DAG maxActiveRuns when
-- it applies apart from the queue (0: none)   ARGV[4] digest of the request's body under an
-- Idempotency-Key ('': no key)   ARGV[5] the record's TTL (ms)   ARGV[6] events stream cap
-- ARGV[7] DAG name   ARGV[8] now (ms, the events' time)
-- ARGV[9] s, then s hash field/value pairs every run of the chunk gets
-- then per run: id, due time in ms (0: now), reason shown while delayed, waiting score,
-- flags ('d': hold the dedup key, 'c': claim the cron slot, 'p': a slot deduplicated onto
-- the holder stays unclaimed, to fire later: overlapPolicy latest), the slot marker's TTL (ms),
-- the item's index in its request under an Idempotency-Key ('': no key),
-- n then n hash field/value pairs of its own, k then k pairs (step name, ready-stream task),
-- e then e triples (step, status, attempt) of its step events (the run event comes first)
-- Returns {'conflict'} when the Idempotency-Key was used with another body (nothing written),
-- else one string per run, a letter and its detail: 'a' (admitted), 'w<reason>' (waiting) or
-- 'l<reason>' (delayed) for a new run, which keeps the id it was given; 'd<id>' (deduplicated
-- onto the run holding the dedup key); 'f<id>' (the cron slot already started that run; no
-- id: none); 'x' (the id is taken); under an Idempotency-Key, 'rc:<id>' or 'rd:<id>' (replayed:
-- this item created, or was deduplicated onto, that run before). The record of an item is written
-- with the run it records, so however a request is cut, a retry with the same key creates
-- exactly the runs still missing.
local digest = ARGV[4]
if digest ~= '' then
  local known = redis.call('HGET', KEYS[12], '#')
  if known and known ~= digest then
    return {'conflict'}
  end
end
local q = {name = ARGV[1], limit = tonumber(ARGV[2]), waiting = KEYS[6], active = KEYS[7],
           waiting_queues = KEYS[9], paused = KEYS[10]}
local dlimit = tonumber(ARGV[3])
local cap, dag, now = ARGV[6], ARGV[7], ARGV[8]
local shared = {}
local a = 10
for _ = 1, tonumber(ARGV[9]) do
  shared[#shared + 1] = ARGV[a]
  shared[#shared + 1] = ARGV[a + 1]
  a = a + 2
end
local m = tonumber(ARGV[a])
a = a + 1
-- The counts admission reads, read once per chunk and kept up to date as runs are added.
local counts = nil
local function read_counts()
  if counts == nil then
    counts = {paused = redis.call('SISMEMBER', q.paused, q.name) == 1,
              waiting = redis.call('ZCARD', q.waiting),
              active = q.limit > 0 and redis.call('SCARD', q.active) or 0,
              dag = dlimit > 0 and redis.call('SCARD', KEYS[8]) or 0}
  end
  return counts
end
local recorded = false
-- Records under the Idempotency-Key what item `idem` got: kind 'c' or 'd' and the run id.
local function remember(idem, kind, run_id)
  if idem ~= '' then
    if not recorded then
      if redis.call('HSETNX', KEYS[12], '#', digest) == 1 then
        redis.call('PEXPIRE', KEYS[12], ARGV[5])
      end
      recorded = true
    end
    redis.call('HSET', KEYS[12], idem, kind .. ':' .. run_id)
  end
end
local out = {}
for i = 1, m do
  local id, due, delay_reason, score, flags, slot_ttl, idem =
    ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local run, dedup, slot = KEYS[10 + 3 * i], KEYS[11 + 3 * i], KEYS[12 + 3 * i]
  local fields_at = a + 7
  local n = tonumber(ARGV[fields_at])
  local tasks_at = fields_at + 1 + 2 * n
  local k = tonumber(ARGV[tasks_at])
  local events_at = tasks_at + 1 + 2 * k
  local e = tonumber(ARGV[events_at])
  a = events_at + 1 + 3 * e
  local with_dedup, with_slot = string.find(flags, 'd', 1, true), string.find(flags, 'c', 1, true)
  local done = nil
  if idem ~= '' then
    done = redis.call('HGET', KEYS[12], idem)
  end
  local fired = nil
  if not done and with_slot then
    fired = redis.call('GET', slot)
  end
  local holder = nil
  if not done and not fired and with_dedup then
    holder = redis.call('GET', dedup)
  end
  if done then
    out[i] = 'r' .. done
  elseif fired then
    out[i] = 'f' .. fired
  elseif holder then
    if with_slot and not string.find(flags, 'p', 1, true) then
      redis.call('SET', slot, '', 'PX', slot_ttl)
    end
    remember(idem, 'd', holder)
    out[i] = 'd' .. holder
  elseif redis.call('EXISTS', run) == 1 then
    out[i] = 'x'
  else
    if with_dedup then
      redis.call('SET', dedup, id)
    end
    if with_slot then
      redis.call('SET', slot, id, 'PX', slot_ttl)
    end
    remember(idem, 'c', id)
    -- The run hash: shared fields, its own, then what its admission adds; one HSET.
    local fields = {}
    for j = 1, #shared do
      fields[j] = shared[j]
    end
    for j = fields_at + 1, fields_at + 2 * n do
      fields[#fields + 1] = ARGV[j]
    end
    local outcome, why = 'admitted', ''
    if due > 0 then
      outcome, why = 'later', delay_reason
    else
      local c = read_counts()
      why = blocked_by(q, c.paused, c.waiting, c.active) or
            (dlimit > 0 and c.dag >= dlimit and dag_limit_reason(dlimit)) or ''
      if why ~= '' then
        outcome = 'waiting'
      end
    end
    if outcome == 'admitted' then
      local c = counts
      for j = tasks_at + 1, tasks_at + 2 * k, 2 do
        local entry = redis.call('XADD', KEYS[4], '*', 't', ARGV[j + 1])
        if ARGV[j] ~= '' then
          fields[#fields + 1] = 'e:' .. ARGV[j]
          fields[#fields + 1] = entry
        end
      end
      redis.call('SADD', q.active, id)
      c.active = c.active + 1
      if dlimit > 0 then
        redis.call('SADD', KEYS[8], id)
        c.dag = c.dag + 1
      end
    else
      -- Held until admitted (see hold in lua/admission.lua).
      if k > 0 then
        fields[#fields + 1] = 'held'
        fields[#fields + 1] = k
        for j = 1, k do
          fields[#fields + 1] = 'h:' .. j
          fields[#fields + 1] = ARGV[tasks_at + 2 * j]
          fields[#fields + 1] = 'hs:' .. j
          fields[#fields + 1] = ARGV[tasks_at + 2 * j - 1]
        end
      end
      fields[#fields + 1] = 'reason'
      fields[#fields + 1] = why
    end
    redis.call('HSET', run, unpack(fields))
    redis.call('ZADD', KEYS[2], 0, id)
    redis.call('ZADD', KEYS[3], 0, id)
    add_event(KEYS[11], cap, id, dag, '', 'queued', '', now)
    for j = events_at + 1, events_at + 3 * e, 3 do
      add_event(KEYS[11], cap, id, dag, ARGV[j], ARGV[j + 1], ARGV[j + 2], now)
    end
    if outcome == 'later' then
      redis.call('ZADD', KEYS[5], due, id)
    elseif outcome == 'waiting' then
      redis.call('ZADD', q.waiting, score, id)
      redis.call('SADD', q.waiting_queues, q.name)
      local c = counts
      c.waiting = c.waiting + 1
    end
    out[i] = string.sub(outcome, 1, 1) .. why
  end
end
return out
