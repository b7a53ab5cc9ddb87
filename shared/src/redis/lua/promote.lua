-- promote: a delayed run fell due; take it out of the delayed set and admit it or make it
-- wait, atomically. Several coordinators may promote the same run: only one ZREM wins.
-- KEYS[1] delayed ZSET   KEYS[2] run hash   KEYS[3] its own ready stream (of its priority and
-- DAG-level worker selector)   KEYS[4] waiting ZSET of its queue   KEYS[5] active SET of its queue   KEYS[6] active SET of its
-- DAG   KEYS[7] queues-with-waiting-runs SET   KEYS[8] paused queues SET
-- KEYS[9..] the ready streams of its steps' own worker selectors (at its priority, in
-- Dag::selectors order after the DAG's: stream index 1, 2, ...; its held tasks name theirs
-- by index, field hq:<i>)
-- ARGV[1] run id   ARGV[2] queue name   ARGV[3] queue maxConcurrency (0: none)
-- ARGV[4] DAG maxActiveRuns apart from the queue (0: none)   ARGV[5] waiting score
-- Returns 'admitted', 'waiting', or 'gone' (another coordinator promoted it first).
local id = ARGV[1]
if redis.call('ZREM', KEYS[1], id) == 0 then
  return 'gone'
end
local q = {name = ARGV[2], limit = tonumber(ARGV[3]), waiting = KEYS[4], active = KEYS[5],
           waiting_queues = KEYS[7], paused = KEYS[8]}
local streams = {KEYS[3]}
for j = 9, #KEYS do
  streams[#streams + 1] = KEYS[j]
end
return admit_or_wait(KEYS[2], id, q, KEYS[6], tonumber(ARGV[4]), streams, nil, ARGV[5], true)
