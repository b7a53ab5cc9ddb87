-- submit: create a chunk of runs of one DAG version, queue and priority, each deduplicated and
-- admitted (or delayed, or waiting), in request order, atomically. What the runs share (queue,
-- limits, DAG, the run hash fields they have in common, the Idempotency-Key record) is passed
-- once; each run costs one HSET of its hash, its index entries, its ready entry and its
-- events' entries.
-- KEYS[1] the parent run's children ZSET (used with flag 'k'; else unused)   KEYS[2] runs-by-DAG index   KEYS[3] runs-by-status index (queued)
-- KEYS[4] the ready stream of the chunk's priority   KEYS[5] delayed ZSET
-- KEYS[6] waiting ZSET of the queue   KEYS[7] active SET of the queue   KEYS[8] active SET of
-- the DAG   KEYS[9] queues-with-waiting-runs SET   KEYS[10] paused queues SET
-- KEYS[11] events stream   KEYS[12] idempotency record HASH (used when ARGV[4] is not '')
-- then per run i (from 1): KEYS[9 + 4i] its run hash, KEYS[10 + 4i] its dedup key (used with
-- flag 'd': a STRING holding the run that holds the key for its dedup window, or an active
-- run of an earlier version; its last 24 characters, the digest, named its field in
-- KEYS[#KEYS] in the previous version), KEYS[11 + 4i] the same dedup key under its
-- name before dedup keys became digests (runs queued by earlier versions hold those; used
-- with flag 'd'), KEYS[12 + 4i] its cron-slot key (used with flag 'c'); then, after the m
-- runs' keys, KEYS[13 + 4m ..] the ready streams of the steps' own worker selectors (at the
-- chunk's priority, in Dag::selectors order after the DAG's own, KEYS[4]: stream index 1, 2,
-- ...); last, KEYS[#KEYS] the dedup holders HASH (digest -> the active run holding it),
-- where a new run takes its dedup key
-- ARGV[1] queue name   ARGV[2] queue maxConcurrency (0: none)   ARGV[3] DAG maxActiveRuns when
-- it applies apart from the queue (0: none)   ARGV[4] digest of the request's body under an
-- Idempotency-Key ('': no key)   ARGV[5] the record's TTL (ms)   ARGV[6] events stream cap
-- ARGV[7] the waiting score of the chunk's runs (priority, then submit time)
-- ARGV[8] s, then s hash field/value pairs every run of the chunk gets
-- then per run: id, flags ('d': hold the dedup key, also named by the run's `dedup` field;
-- 'c': claim the cron slot; 'p': a slot deduplicated onto the holder stays unclaimed, to fire
-- later: overlapPolicy latest; 'l': due later; 'k': a child run, added to KEYS[1]), the item's index in its request under an
-- Idempotency-Key ('': no key), with 'l' its due time (ms) and the reason shown while
-- delayed, with 'c' the slot marker's TTL (ms), with 'd' the dedup key's field in the holders
-- HASH (Keys::dedup_field: the 12 bytes its digest spells; holder_field in lua/holders.lua,
-- computed by the caller, which saves Redis that work),
-- n then n hash field/value pairs of its own, k then k triples (step name, the index of its
-- ready stream: 0 for KEYS[4], j for KEYS[12 + 4m + j]; msgpack ready-stream task),
-- e then e values of field `e` of its events' entries (Event::pack in shared/src/model.rs:
-- the run's `queued` rides on its first step's, or has an entry of its own when no step is
-- queued), each one XADD of one field
-- Returns {'conflict'} when the Idempotency-Key was used with another body (nothing written),
-- else one string per run, a letter and its detail: 'a' (admitted), 'w<reason>' (waiting) or
-- 'l<reason>' (delayed) for a new run, which keeps the id it was given; 'd<id>' (deduplicated
-- onto the run holding the dedup key); 'f<id>' (the cron slot already started that run; no
-- id: none); 'x' (the id is taken); under an Idempotency-Key, 'rc:<id>' or 'rd:<id>' (replayed:
-- this item created, or was deduplicated onto, that run before). The record of an item is written
-- with the run it records, so however a request is cut, a retry with the same key creates
-- exactly the runs still missing.
local digest = ARGV[4]
-- The Idempotency-Key record: `#` the body's digest; in the block form written by this
-- version (`~` '3'), field `B<n>` holds items 150n .. 150n + 149 as 27-byte slots (`c` or
-- `d`, then the 26-character run id; spaces while not recorded: a block fills a 4 KiB
-- allocation), and `~` is '4' once some id did not fit a slot (a run of an earlier version,
-- 36 characters) and was recorded in the item form, field `<item index>` holding `c:<id>` or
-- `d:<id>`. Records of earlier versions keep their form, read and added to as it is: the
-- item form only (no `~`), or blocks `b<n>` of 200 37-byte slots, ids padded with spaces (`~`
-- '1'; '2' with items too).
local known, form = false, false
if digest ~= '' then
  local got = redis.call('HMGET', KEYS[12], '#', '~')
  known, form = got[1], got[2]
  if known and known ~= digest then
    return {'conflict'}
  end
end
local block_form = (not known) or (form ~= false)
local item_form = known and form ~= '1' and form ~= '3'
local BLOCK, SLOT, BLOCKS, MIXED = 150, 27, 'B', '4'
if form == '1' or form == '2' then
  BLOCK, SLOT, BLOCKS, MIXED = 200, 37, 'b', '2'
end
-- Blocks of the record read or to write: n -> string.
local blocks = {}
local function block_of(idem)
  local i = tonumber(idem)
  return math.floor(i / BLOCK), i % BLOCK
end
local q = {name = ARGV[1], limit = tonumber(ARGV[2]), waiting = KEYS[6], active = KEYS[7],
           waiting_queues = KEYS[9], paused = KEYS[10]}
local dlimit = tonumber(ARGV[3])
local cap = ARGV[6]
local shared = {}
local score = ARGV[7]
local a = 9
for _ = 1, tonumber(ARGV[8]) do
  shared[#shared + 1] = ARGV[a]
  shared[#shared + 1] = ARGV[a + 1]
  a = a + 2
end
local m = tonumber(ARGV[a])
a = a + 1
-- The chunk's ready streams, by index (see stream_at in lua/streams.lua).
local streams = {KEYS[4]}
for j = 13 + 4 * m, #KEYS - 1 do
  streams[#streams + 1] = KEYS[j]
end
local holders = KEYS[#KEYS]
local fields, nf = {}, 0
for j = 1, #shared do
  fields[j] = shared[j]
end
-- Sets the next pair of the run hash being built.
local function put(f, v)
  fields[nf + 1] = f
  fields[nf + 2] = v
  nf = nf + 2
end
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
-- What the chunk writes, gathered as it goes and written with one variadic command each at
-- the end (the order of writes inside one script does not matter to anyone else): the
-- Idempotency-Key record's items, the dedup keys taken (digest, run id), the two index
-- entries, the active/waiting/delayed members.
local records, dedups, indexed, active, active_dag, delayed, waiting = {}, {}, {}, {}, {}, {}, {}
-- Dedup keys taken by earlier runs of this chunk: key -> run id.
local taken = {}
local out = {}
-- The per-run layout: a first pass finds where each run's section starts, so the reads that
-- can be done for the whole chunk at once (its Idempotency-Key records, its dedup keys, whether
-- a run id is taken) are one command each.
local at, flagsv, idems, dues, reasons, ttls, fats = {}, {}, {}, {}, {}, {}, {}
-- Where each run's tasks and events sections start and how many each holds (read once, here).
local tats, ks, eats, es = {}, {}, {}, {}
-- The holders field of each run with flag 'd': i -> 12 bytes.
local dfield = {}
do
  local b = a
  for i = 1, m do
    at[i] = b
    local flags = ARGV[b + 1]
    flagsv[i], idems[i] = flags, ARGV[b + 2]
    b = b + 3
    if string.find(flags, 'l', 1, true) then
      dues[i], reasons[i] = tonumber(ARGV[b]), ARGV[b + 1]
      b = b + 2
    else
      dues[i], reasons[i] = 0, ''
    end
    if string.find(flags, 'c', 1, true) then
      ttls[i] = ARGV[b]
      b = b + 1
    end
    if string.find(flags, 'd', 1, true) then
      dfield[i] = ARGV[b]
      b = b + 1
    end
    local fields_at = b
    fats[i] = b
    local tasks_at = fields_at + 1 + 2 * tonumber(ARGV[fields_at])
    local k = tonumber(ARGV[tasks_at])
    -- Every task's stream must be passed: checked before anything is written.
    for j = 1, k do
      stream_at(streams, ARGV[tasks_at + 3 * j - 1])
    end
    local events_at = tasks_at + 1 + 3 * k
    local e = tonumber(ARGV[events_at])
    tats[i], ks[i], eats[i], es[i] = tasks_at, k, events_at, e
    b = events_at + 1 + e
  end
end
-- Idempotency-Key records: only when the record existed before this call.
local done_of = {}
if known then
  if block_form then
    local names, seen = {}, {}
    for i = 1, m do
      local idem = idems[i]
      if idem ~= '' then
        local b = block_of(idem)
        if not seen[b] then
          seen[b] = true
          names[#names + 1] = b
        end
      end
    end
    if #names > 0 then
      local fields = {}
      for j = 1, #names do
        fields[j] = BLOCKS .. names[j]
      end
      local got = redis.call('HMGET', KEYS[12], unpack(fields))
      for j = 1, #names do
        if got[j] then
          blocks[names[j]] = got[j]
        end
      end
    end
    for i = 1, m do
      local idem = idems[i]
      if idem ~= '' then
        local b, slot = block_of(idem)
        local v = blocks[b] and string.sub(blocks[b], slot * SLOT + 1, slot * SLOT + SLOT)
        if v and string.sub(v, 1, 1) ~= ' ' then
          done_of[idem] = string.sub(v, 1, 1) .. ':' .. string.match(v, '^.([^ ]*)')
        end
      end
    end
  end
  if item_form then
    local fields = {}
    for i = 1, m do
      local idem = idems[i]
      if idem ~= '' and not done_of[idem] then
        fields[#fields + 1] = idem
      end
    end
    if #fields > 0 then
      local got = redis.call('HMGET', KEYS[12], unpack(fields))
      for j = 1, #fields do
        if got[j] then
          done_of[fields[j]] = got[j]
        end
      end
    end
  end
end
-- Holders of the chunk's dedup keys, read at once: the fields of the active holders (in
-- this version's form and the previous version's, the 24 hex digits), then the keys of window
-- holders and of runs of earlier versions (key name -> run id).
local held = {}
do
  local dkeys, fields = {}, {}
  for i = 1, m do
    if string.find(flagsv[i], 'd', 1, true) then
      local key = KEYS[10 + 4 * i]
      dkeys[#dkeys + 1] = key
      dkeys[#dkeys + 1] = KEYS[11 + 4 * i]
      fields[#fields + 1] = dfield[i]
      fields[#fields + 1] = string.sub(key, -24)
    end
  end
  if #dkeys > 0 then
    local got = redis.call('MGET', unpack(dkeys))
    for j = 1, #dkeys do
      if got[j] then
        held[dkeys[j]] = got[j]
      end
    end
    got = redis.call('HMGET', holders, unpack(fields))
    for j = 1, #fields, 2 do
      local holder = got[j] or got[j + 1]
      if holder then
        held[dkeys[j]] = holder
      end
    end
  end
end
-- Whether any run id of the chunk is taken (a UUIDv7 collision: never in practice).
local any_taken = false
do
  local rkeys = {}
  for i = 1, m do
    rkeys[i] = KEYS[9 + 4 * i]
  end
  any_taken = redis.call('EXISTS', unpack(rkeys)) > 0
end
local stream = KEYS[11]
for i = 1, m do
  local id, flags, idem, due, delay_reason, slot_ttl =
    ARGV[at[i]], flagsv[i], idems[i], dues[i], reasons[i], ttls[i]
  local run, dedup, legacy, slot = KEYS[9 + 4 * i], KEYS[10 + 4 * i], KEYS[11 + 4 * i],
    KEYS[12 + 4 * i]
  local fields_at, tasks_at, k, events_at, e = fats[i], tats[i], ks[i], eats[i], es[i]
  local with_dedup, with_slot = string.find(flags, 'd', 1, true), string.find(flags, 'c', 1, true)
  local done = nil
  if idem ~= '' then
    done = done_of[idem]
  end
  local fired = nil
  if not done and with_slot then
    fired = redis.call('GET', slot)
  end
  local holder = nil
  if not done and not fired and with_dedup then
    holder = taken[dedup] or held[dedup] or held[legacy]
  end
  if done then
    out[i] = 'r' .. done
  elseif fired then
    out[i] = 'f' .. fired
  elseif holder then
    if with_slot and not string.find(flags, 'p', 1, true) then
      redis.call('SET', slot, '', 'PX', slot_ttl)
    end
    if idem ~= '' then
      records[#records + 1] = {idem, 'd', holder}
    end
    out[i] = 'd' .. holder
  elseif any_taken and redis.call('EXISTS', run) == 1 then
    out[i] = 'x'
  else
    if with_dedup then
      taken[dedup] = id
      dedups[#dedups + 1] = dfield[i]
      dedups[#dedups + 1] = id
    end
    if with_slot then
      redis.call('SET', slot, id, 'PX', slot_ttl)
    end
    if idem ~= '' then
      records[#records + 1] = {idem, 'c', id}
    end
    -- The run hash: shared fields, its own, then what its admission adds; one HSET.
    -- (`fields` is one table for the chunk: the shared pairs stay at its head and each run
    -- overwrites what follows, up to `nf`.)
    nf = #shared
    for j = fields_at + 1, tasks_at - 1, 2 do
      put(ARGV[j], ARGV[j + 1])
    end
    if with_dedup then
      -- Only the key's digest, its last 24 characters (Keys::dedup; Keys::dedup_named names
      -- the key again): 12 bytes less than the whole name in every run hash.
      put('dedup', string.sub(dedup, -24))
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
      for j = tasks_at + 1, tasks_at + 3 * k, 3 do
        local entry = redis.call('XADD', stream_at(streams, ARGV[j + 1]), '*', 't', ARGV[j + 2])
        if ARGV[j] ~= '' then
          put('e:' .. ARGV[j], entry)
        end
      end
      active[#active + 1] = id
      c.active = c.active + 1
      if dlimit > 0 then
        active_dag[#active_dag + 1] = id
        c.dag = c.dag + 1
      end
    else
      -- Held until admitted (see hold in lua/admission.lua).
      if k > 0 then
        put('held', k)
        for j = 1, k do
          put('h:' .. j, ARGV[tasks_at + 3 * j])
          put('hs:' .. j, ARGV[tasks_at + 3 * j - 2])
          local ix = ARGV[tasks_at + 3 * j - 1]
          if ix ~= '0' then
            put('hq:' .. j, ix)
          end
        end
      end
      put('reason', why)
    end
    redis.call('HSET', run, unpack(fields, 1, nf))
    if string.find(flags, 'k', 1, true) then
      redis.call('ZADD', KEYS[1], 0, id)
    end
    -- (A string score: a number would be formatted for Redis and parsed again.)
    indexed[#indexed + 1] = '0'
    indexed[#indexed + 1] = id
    -- Its events, in order (the stream is trimmed once, at the end of the chunk).
    for j = events_at + 1, events_at + e do
      redis.call('XADD', stream, '*', 'e', ARGV[j])
    end
    if outcome == 'later' then
      delayed[#delayed + 1] = due
      delayed[#delayed + 1] = id
    elseif outcome == 'waiting' then
      waiting[#waiting + 1] = score
      waiting[#waiting + 1] = id
      local c = counts
      c.waiting = c.waiting + 1
    end
    out[i] = string.sub(outcome, 1, 1) .. why
  end
end
if #records > 0 then
  local fields = {}
  if not known then
    fields = {'#', digest, '~', '3'}
  end
  -- Slots written per block: n -> {slot -> SLOT bytes}.
  local writes, order = {}, {}
  for _, r in ipairs(records) do
    local idem, kind, run_id = r[1], r[2], r[3]
    if block_form and #run_id < SLOT and not string.find(run_id, ' ', 1, true) then
      local b, slot = block_of(idem)
      if not writes[b] then
        writes[b] = {}
        order[#order + 1] = b
      end
      writes[b][slot] = kind .. run_id .. string.rep(' ', SLOT - 1 - #run_id)
    else
      -- The item form: a record of an earlier version, or an id that does not fit a slot.
      fields[#fields + 1] = idem
      fields[#fields + 1] = kind .. ':' .. run_id
      if block_form and form ~= MIXED then
        form = MIXED
        fields[#fields + 1] = '~'
        fields[#fields + 1] = MIXED
      end
    end
  end
  local blank = string.rep(' ', SLOT)
  for _, b in ipairs(order) do
    local old, w, parts = blocks[b], writes[b], {}
    for slot = 0, BLOCK - 1 do
      parts[slot + 1] = w[slot] or (old and string.sub(old, slot * SLOT + 1, slot * SLOT + SLOT))
        or blank
    end
    fields[#fields + 1] = BLOCKS .. b
    fields[#fields + 1] = table.concat(parts)
  end
  redis.call('HSET', KEYS[12], unpack(fields))
  if not known then
    redis.call('PEXPIRE', KEYS[12], ARGV[5])
  end
end
if #dedups > 0 then
  redis.call('HSET', holders, unpack(dedups))
end
if #indexed > 0 then
  redis.call('ZADD', KEYS[2], unpack(indexed))
  redis.call('ZADD', KEYS[3], unpack(indexed))
  redis.call('XTRIM', stream, 'MAXLEN', '~', cap)
end
if #active > 0 then
  redis.call('SADD', q.active, unpack(active))
end
if #active_dag > 0 then
  redis.call('SADD', KEYS[8], unpack(active_dag))
end
if #delayed > 0 then
  redis.call('ZADD', KEYS[5], unpack(delayed))
end
if #waiting > 0 then
  redis.call('ZADD', q.waiting, unpack(waiting))
  redis.call('SADD', q.waiting_queues, q.name)
end
return out
