//! The ledger's Lua scripts: each write that must happen once, whatever
//! the redeliveries, is one of them, so it is atomic in Redis.

use std::sync::LazyLock;

use redis::Script;

/// Decides, inside a script, whether a run has just finished. Shared by both
/// scripts so the scheduler (done publishing) and the last worker (last
/// outcome) apply the same rule, and only one of them sees it happen.
const COMPLETE_FN: &str = r#"
local function complete(run_key, now)
  local r = redis.call('HMGET', run_key, 'publishing_done', 'published',
    'succeeded', 'inactive', 'not_found', 'failed', 'finished_at', 'acted', 'duplicates')
  if r[1] ~= '1' or r[7] then return 0 end
  local done = (tonumber(r[3]) or 0) + (tonumber(r[4]) or 0)
             + (tonumber(r[5]) or 0) + (tonumber(r[6]) or 0) + (tonumber(r[8]) or 0)
             + (tonumber(r[9]) or 0)
  if done >= (tonumber(r[2]) or 0) then
    redis.call('HSET', run_key, 'finished_at', now)
    return 1
  end
  return 0
end
"#;

/// A job whose done marker exists: a redelivery, or another inventory
/// line for the same user in the run (same job id). The marker holds the
/// lines counted (`l<line>`, comma-separated); a line not among them is a
/// copy, counted once in `duplicates` so the run's outcomes still reach
/// its published count. Returns -1 for a redelivery (or a job without a
/// line), else 2 + whether the copy finished the run.
const COPY_FN: &str = r#"
local function copy(done_key, run_key, mark, now)
  local seen = redis.call('GET', done_key)
  if string.sub(mark, 1, 1) ~= 'l' or not seen
     or string.find(',' .. seen .. ',', ',' .. mark .. ',', 1, true) then
    return -1
  end
  redis.call('APPEND', done_key, ',' .. mark)
  redis.call('HINCRBY', run_key, 'duplicates', 1)
  redis.call('HSET', run_key, 'last_outcome_at', now)
  return 2 + complete(run_key, now)
end
"#;

/// KEYS: done, run. ARGV: mark (`l<line>`, or the job id for a job without
/// a line), now. Returns 0 when the job was never recorded, -1 for a
/// redelivery, 2 or 3 for a copy counted now (3: it finished the run).
pub(super) static SEEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{COMPLETE_FN}{COPY_FN}
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return copy(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"#
    ))
});

/// KEYS: done, role, run, roles tally, unknown roles, events.
/// ARGV: mark (see [`SEEN`]), done_ttl_s, now, counters (comma list), tally role
/// ("saas:role" or ""), seat price, unknown raw role ("" or "saas:raw"),
/// new raw role ("" when not found), number of role-hash pairs N, whether
/// the hash is replaced (1) or updated (0), N pairs, then event pairs (none
/// when no event).
/// Returns {-1, 0} for a redelivery, {2, 1 when it finished the run} for
/// another line's copy (counted in `duplicates`), else {1 when this outcome
/// finished the run (else 0), 1 when it deactivated the user (else 0)}. A user already
/// deactivated by an earlier run is not deactivated (counted, announced)
/// again.
pub(super) static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{COMPLETE_FN}{COPY_FN}
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  local c = copy(KEYS[1], KEYS[3], ARGV[1], ARGV[3])
  if c < 0 then return {{-1, 0}} end
  return {{2, c - 2}}
end
redis.call('HSET', KEYS[3], 'last_outcome_at', ARGV[3])
local marks = string.find(',' .. ARGV[4] .. ',', ',deactivated,', 1, true) ~= nil
local again = marks and redis.call('HGET', KEYS[2], 'deactivated') == '1'
for c in string.gmatch(ARGV[4], '[^,]+') do
  if not (again and c == 'deactivated') then redis.call('HINCRBY', KEYS[3], c, 1) end
end
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[4], 'n:' .. ARGV[5], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], 'cost:' .. ARGV[5], ARGV[6])
end
if ARGV[7] ~= '' then redis.call('HINCRBY', KEYS[5], ARGV[7], 1) end
local old = redis.call('HGET', KEYS[2], 'role')
local n = tonumber(ARGV[9])
local kv = {{}}
for i = 11, 10 + 2 * n do kv[#kv + 1] = ARGV[i] end
if ARGV[10] == '1' then redis.call('DEL', KEYS[2]) end
redis.call('HSET', KEYS[2], unpack(kv))
if ARGV[8] ~= '' and old and old ~= '' and old ~= ARGV[8] then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', '100000', '*', 'type', 'role_changed',
    'saas', redis.call('HGET', KEYS[2], 'saas'), 'user_id', redis.call('HGET', KEYS[2], 'user_id'),
    'old_role', old, 'new_role', ARGV[8], 'run_id', redis.call('HGET', KEYS[2], 'run_id'), 'at', ARGV[3])
end
local first = 11 + 2 * n
if #ARGV >= first and not again then
  local ev = {{}}
  for i = first, #ARGV do ev[#ev + 1] = ARGV[i] end
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', '100000', '*', unpack(ev))
end
return {{complete(KEYS[3], ARGV[3]), (marks and not again) and 1 or 0}}
"#
    ))
});

/// KEYS: run, run lease, publishing runs. ARGV: now, fencing token ("" for
/// an unfenced run), run id, then field/value pairs to set.
/// Returns 1 when the run finished with this call, -1 when the lease is held
/// by another publisher (a newer one took the run over: it finishes it).
pub(super) static FINISH_PUBLISHING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{COMPLETE_FN}
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local kv = {{}}
for i = 4, #ARGV do kv[#kv + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'publishing_done', '1', unpack(kv))
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[3])
return complete(KEYS[1], ARGV[1])
"#
    ))
});
