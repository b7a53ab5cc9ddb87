-- events: functions that append run and step state changes to the namespace's events stream,
-- prepended to the scripts that make those changes (submit, apply_transition, retry_due), so
-- an event is written in the same atomic call as the change it reports. The stream is capped
-- with an XTRIM MAXLEN ~ <cap> after a section whose last entry's id has a millisecond part
-- divisible by 8: about one section in eight, at any rate, so the stream stays within a few
-- entries of the cap while most scripts skip a command (an XADD with MAXLEN costs Redis more,
-- in the append-only file too, than a plain XADD and an occasional trim). Fields: run, dag,
-- step, status, attempt, rs; the time of the change is the entry id's (entries of earlier
-- versions also have `at`, ms). One entry per step change: when the same transition
-- changed the run, its new status rides in `rs` of one of them (the first when it is
-- `queued`, a run being queued before its steps; else the last), so a one-step run's four
-- changes take two entries; an entry of its own (empty step and attempt) only when no step
-- changed. Readers expand an entry into its events (shared/src/model.rs Event::from_entry).
-- Every entry these functions write has the same fields in the same order, so the stream
-- stores the field names once per node (an entry whose fields match the node's first entry
-- keeps only its values). SUBMIT's entries (lua/submit.lua) hold the same fields packed into
-- one, `e`, by the coordinator (Event::pack).
-- Defines functions only and touches no key itself.

-- Appends one entry, uncapped (the caller trims: see trim_events), and returns its id.
-- `step` is '' for a run's own entry (then `attempt` is written empty); `rs` the run's new
-- status, or ''.
local function add_event(stream, run, dag, step, status, attempt, rs)
  if step == '' then
    attempt = ''
  end
  return redis.call('XADD', stream, '*', 'run', run, 'dag', dag, 'step', step, 'status', status,
    'attempt', attempt, 'rs', rs)
end

-- Caps the stream at about `cap` entries (whole nodes are removed, as MAXLEN ~ does): always
-- when `last` (the id of the entry just added) is nil, else when its millisecond part is
-- divisible by 8.
local function trim_events(stream, cap, last)
  local dash = last and string.find(last, '-', 1, true)
  local ms = dash and tonumber(string.sub(last, 1, dash - 1))
  if ms == nil or ms % 8 == 0 then
    redis.call('XTRIM', stream, 'MAXLEN', '~', cap)
  end
end

-- Appends the events of an ARGV section starting at index i: e (the number of events), then,
-- when e > 0: cap, run id, dag, then e triples: step ('' for the run), status,
-- attempt ('' for the run). Returns the index just past the section.
local function add_events(stream, i)
  local e = tonumber(ARGV[i] or '0')
  if e == 0 then
    return i + 1
  end
  local cap, run, dag = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local steps, rs = {}, ''
  local b = i + 3
  for _ = 1, e do
    if ARGV[b + 1] == '' then
      rs = ARGV[b + 2]
    else
      steps[#steps + 1] = b
    end
    b = b + 3
  end
  local last
  if #steps == 0 then
    last = add_event(stream, run, dag, '', rs, '', '')
  else
    local carrier = #steps
    if rs == 'queued' then
      carrier = 1
    end
    for j, at_b in ipairs(steps) do
      last = add_event(stream, run, dag, ARGV[at_b + 1], ARGV[at_b + 2], ARGV[at_b + 3],
        j == carrier and rs or '')
    end
  end
  trim_events(stream, cap, last)
  return b + 1
end
