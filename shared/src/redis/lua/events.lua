-- events: functions that append run and step state changes to the namespace's events stream,
-- prepended to the scripts that make those changes (apply_transition, retry_due; submit
-- appends its packed entries itself), so an event is written in the same atomic call as the
-- change it reports. The stream is capped
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
-- Every entry add_event writes has the same fields in the same order, so the stream
-- stores the field names once per node (an entry whose fields match the node's first entry
-- keeps only its values). The entries of add_events (apply_transition) and of lua/submit.lua
-- hold the same fields packed into one, `e`, by the caller (Event::pack): one argument
-- instead of twelve for Redis to read, store and write to its append-only file.
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

-- Appends the entries of an ARGV section starting at index i: n (the number of entries),
-- then, when n > 0: cap, then n values of field `e` (the entries' fields packed by the
-- caller: Event::pack in shared/src/model.rs, transition::push_section), each one XADD of
-- one field. Returns the index just past the section.
local function add_events(stream, i)
  local n = tonumber(ARGV[i] or '0')
  if n == 0 then
    return i + 1
  end
  local last
  for j = i + 2, i + 1 + n do
    last = redis.call('XADD', stream, '*', 'e', ARGV[j])
  end
  trim_events(stream, ARGV[i + 1], last)
  return i + 2 + n
end
