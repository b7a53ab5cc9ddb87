-- events: functions that append run and step state changes to the namespace's events stream,
-- prepended to the scripts that make those changes (submit, apply_transition, retry_due), so
-- an event is written in the same atomic call as the change it reports. The stream is capped
-- with one XTRIM MAXLEN ~ <cap> per section (an XADD with MAXLEN costs Redis more, in the
-- append-only file too, than a plain XADD and one trim for the section). Fields: run, dag, step, status, attempt, at (ms); a run event has
-- an empty step and attempt. Every entry has the same fields in the same order, so the stream
-- stores the field names once per node (an entry whose fields match the node's first entry
-- keeps only its values). Defines functions only and touches no key itself.

-- Appends one event, uncapped (the caller trims: see trim_events). `step` is '' for a run
-- event (then `attempt` is written empty).
local function add_event(stream, run, dag, step, status, attempt, at)
  if step == '' then
    attempt = ''
  end
  redis.call('XADD', stream, '*', 'run', run, 'dag', dag, 'step', step, 'status', status,
    'attempt', attempt, 'at', at)
end

-- Caps the stream at about `cap` entries (whole nodes are removed, as MAXLEN ~ does).
local function trim_events(stream, cap)
  redis.call('XTRIM', stream, 'MAXLEN', '~', cap)
end

-- Appends the events of an ARGV section starting at index i: e (the number of events), then,
-- when e > 0: cap, run id, dag, at (ms), then e triples: step ('' for the run), status,
-- attempt ('' for the run). Returns the index just past the section.
local function add_events(stream, i)
  local e = tonumber(ARGV[i] or '0')
  if e == 0 then
    return i + 1
  end
  local cap, run, dag, at = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local b = i + 4
  for j = 1, e do
    add_event(stream, run, dag, ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], at)
    b = b + 3
  end
  trim_events(stream, cap)
  return b + 1
end
