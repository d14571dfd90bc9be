//! The fleet limiter's Lua scripts: each decision is one atomic step on
//! Redis' own clock.
//!
//! The adaptive factor answers throttles in proportion to the signal. When
//! the vendor throttles, the share of the fleet's recent requests it turned
//! away tells how far above its real limit the fleet was: the estimated
//! limit (`ceiling`) is the current factor times the admitted share (a lone
//! 429 among hundreds of requests leaves it where it is; a vendor that halved
//! its limit halves it). The factor then drops a little below that estimate
//! and grows back along a cubic curve (as TCP CUBIC does): quickly at first,
//! flat near the estimate, where the vendor's limit most likely is, then
//! faster again, probing upwards, so a limit that rises again is found.
//! Each decrease at about the same level as the one before (a stable vendor
//! limit) halves the curve's steepness (up to 32×): the fleet then probes
//! above the limit rarely, and each probe costs one 429.
//!
//! A window the vendor counts (N requests per window, logged at the gate)
//! is answered more exactly than a rate can be: the fleet's own send log
//! says how many requests the vendor's window held when it refused one, and
//! that count *is* the vendor's limit. The fleet then sends that many per
//! window (paced, and checked at the gate) instead of a rate a little below
//! an estimate, and probes one more after a quiet spell (then 2, 4, … more,
//! so a limit that rose again is found quickly): one 429 per probe at a
//! stable limit, the whole quota used between probes.

use std::sync::LazyLock;

use redis::Script;

/// Growth of the factor along the cubic, per s³: after a 10 % cut the
/// factor is back at its ceiling two seconds later.
pub(super) const CUBIC: f64 = 0.0125;
/// How far below the estimated limit the factor restarts.
pub(super) const BETA: f64 = 0.9;
/// One decrease never cuts the factor by more than half: an overload seen
/// through a sliding window (where every request is refused until it
/// drains) would otherwise read as "the vendor allows nothing".
pub(super) const MIN_ADMITTED: f64 = 0.5;
/// The factor never goes below this share of the configured rate.
pub(super) const MIN_FACTOR: f64 = 0.05;

/// A learned window count is held this many windows (at least
/// [`MIN_PROBE_MS`]) before the fleet tries one request more per window.
pub(super) const PROBE_WINDOWS: u64 = 10;
/// The shortest hold of a learned window count.
pub(super) const MIN_PROBE_MS: u64 = 10_000;

/// How long a learned window count holds before a probe above it.
pub fn probe_ms(window: std::time::Duration) -> u64 {
    (window.as_millis() as u64 * PROBE_WINDOWS).max(MIN_PROBE_MS)
}

/// Shared Lua: the time from Redis, the adaptive factor and the allowed
/// count per window now.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
-- Requests allowed per window (n: the configured count, 0 = not a counted
-- window): the count learned from the vendor's refusals, plus a probe
-- allowance of 1, 3, 7, ... more after each quiet probe interval.
local function allowed_now(state_key, n, probe_ms)
  if n <= 0 then return n end
  local st = redis.call('HMGET', state_key, 'count', 'count_ms')
  local c = tonumber(st[1])
  if not c then return n end
  local steps = math.floor((now_ms - (tonumber(st[2]) or now_ms)) / probe_ms)
  local a = c + 2 ^ math.min(steps, 30) - 1
  if a > n then a = n end
  return a
end
local function factor_now(state_key, cubic)
  local st = redis.call('HMGET', state_key, 'ceiling', 'floor', 'decreased_ms', 'streak')
  local c = tonumber(st[1])
  if not c then return 1 end
  -- Throttled again and again at about the same level: the vendor's limit
  -- is there, so stay near it longer before probing above it.
  cubic = cubic / (2 ^ (tonumber(st[4]) or 0))
  local f0 = tonumber(st[2]) or c
  local s = (now_ms - (tonumber(st[3]) or now_ms)) / 1000
  local k = ((c - f0) / cubic) ^ (1 / 3)
  local d = s - k
  local f = c + cubic * d * d * d
  if f < f0 then f = f0 end
  if f > 1 then f = 1 end
  return f
end
"#;

/// KEYS: state, pause, leases, override.
/// ARGV: per_second, burst, max_in_flight (0 = none), lease id, lease ttl
/// ms, reservation horizon µs, window µs, margin µs, cubic, requests per
/// counted window (0 = none), probe interval ms.
/// Returns {granted, wait µs, reason, effective milli-rps, base milli-rps,
/// burst, generation}.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRELUDE}
local ov = redis.call('HMGET', KEYS[4], 'per_second', 'burst', 'max_in_flight')
local rate = tonumber(ov[1]) or tonumber(ARGV[1])
local burst = tonumber(ov[2]) or tonumber(ARGV[2])
local cap = tonumber(ov[3]) or tonumber(ARGV[3])
local f = factor_now(KEYS[1], tonumber(ARGV[9]))
local n = tonumber(ARGV[10])
if n > 0 then f = f * allowed_now(KEYS[1], n, tonumber(ARGV[11])) / n end
local eff = rate * f
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') or 0
local function reply(granted, wait_us, reason)
  return {{granted, math.floor(wait_us), reason, math.floor(eff * 1000), math.floor(rate * 1000), burst, gen}}
end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if pause > now_ms then return reply(0, (pause - now_ms) * 1000, 'paused') end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) >= cap then
    local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    local until_expiry = (tonumber(first[2]) - now_ms) * 1000
    -- Leases are normally returned long before they expire: look again soon.
    return reply(0, math.max(1000, math.min(until_expiry, 25000)), 'in_flight')
  end
end
-- Each window is stretched by the jitter margin: N requests spaced over
-- window + margin never land N + 1 in any window the vendor counts.
local interval = 1000000 / eff * (1 + tonumber(ARGV[8]) / tonumber(ARGV[7]))
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0
local new_tat = math.max(tat, now_us) + interval
-- A token bucket's last token stays with the vendor: at saturation both
-- buckets run empty in step, and a request that arrives a little earlier
-- than the first of the burst did (network jitter) would find the vendor's
-- empty. One token fuller, the vendor's absorbs up to one interval of it;
-- the rate, and so the quota, is used whole.
local usable = burst > 1 and burst - 1 or burst
local wait = new_tat - usable * interval - now_us
if wait > tonumber(ARGV[6]) then return reply(0, wait - tonumber(ARGV[6]), 'rate') end
if wait < 0 then wait = 0 end
redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', new_tat), 'effective_per_second', tostring(eff))
redis.call('HINCRBY', KEYS[1], 'grants', 1)
if cap > 0 then
  redis.call('ZADD', KEYS[3], now_ms + math.floor(wait / 1000) + tonumber(ARGV[5]), ARGV[4])
  redis.call('PEXPIRE', KEYS[3], math.floor(wait / 1000) + tonumber(ARGV[5]) + 1000)
end
return reply(1, wait, 'ok')
"#
    ))
});

/// KEYS: state, pause, send log. ARGV: generation of the booking, window
/// µs, requests per window (0 = no log), margin µs, unique id, probe
/// interval ms.
/// The last check before a request leaves: {0, 0} when the booking is
/// stale (a throttle or pause since), {2, wait µs} when the window (as the
/// vendor counts it, by arrival) already holds its requests (the count
/// learned from the vendor when there is one), {1, at µs} to go — the send
/// is then logged at that time ({1, 0}: no log). The log makes the window exact whatever
/// happened before this point: a request delayed after its booking (a busy
/// machine) moves the window's edge instead of sharing a window with a
/// request booked N slots later.
pub(super) static GATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRELUDE}
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0') or 0
if gen ~= tonumber(ARGV[1]) then return {{0, 0}} end
local pause = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if pause * 1000 > now_us then return {{0, 0}} end
local n = allowed_now(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[6]))
if n > 0 then
  local span = tonumber(ARGV[2]) + tonumber(ARGV[4])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.0f', now_us - span))
  local held = redis.call('ZCARD', KEYS[3])
  if held >= n then
    local oldest = redis.call('ZRANGE', KEYS[3], held - n, held - n, 'WITHSCORES')
    return {{2, math.max(1, math.floor(tonumber(oldest[2]) + span - now_us))}}
  end
  redis.call('ZADD', KEYS[3], string.format('%.0f', now_us), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.floor(span / 1000) + 1000)
  return {{1, now_us}}
end
return {{1, 0}}
"#
    ))
});

/// KEYS: state, pause, send log, refused log, override.
/// ARGV: pause ms (0 = none), adapt (1/0), min factor, cooldown ms, beta,
/// cubic, min admitted share, is a throttle (1/0), the throttled send's
/// mark µs (0 = none), window µs, requests per counted window (0 = none),
/// probe interval ms, per_second, burst, the pause was cut short by
/// `max_pause` (1/0).
/// Returns {factor × 1000, pause until ms, ceiling × 1000}.
pub(super) static THROTTLED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{PRELUDE}
local pause_ms = tonumber(ARGV[1])
local until_ms = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
local n = tonumber(ARGV[11])
local probe = tonumber(ARGV[12])
local window = tonumber(ARGV[10])
local sent = tonumber(ARGV[9])
local bump = false
local paused = false
if pause_ms > 0 and now_ms + pause_ms > until_ms then
  until_ms = now_ms + pause_ms
  redis.call('SET', KEYS[2], until_ms, 'PX', pause_ms + 1000)
  paused = true
  bump = true
end
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[1], 'throttles', 1)
  -- Refused sends are logged apart: what the vendor's window held is the
  -- sends it accepted.
  if n > 0 and sent > 0 then
    local at = string.format('%.0f', sent)
    redis.call('ZADD', KEYS[4], at, at)
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', string.format('%.0f', now_us - 2 * window))
    redis.call('PEXPIRE', KEYS[4], math.floor(2 * window / 1000) + 1000)
  end
end
local f = factor_now(KEYS[1], tonumber(ARGV[6]))
local allowed = allowed_now(KEYS[1], n, probe)
local ceiling = tonumber(redis.call('HGET', KEYS[1], 'ceiling') or '1') or 1
local cut = false
if ARGV[2] == '1' then
  local last = tonumber(redis.call('HGET', KEYS[1], 'decreased_ms') or '0') or 0
  if now_ms - last >= tonumber(ARGV[4]) then
    local st = redis.call('HMGET', KEYS[1], 'grants', 'throttles')
    -- Fewer than ten requests are too few to measure a share by.
    local grants = math.max(tonumber(st[1]) or 0, 10)
    local throttles = tonumber(st[2]) or 1
    local admitted = 1 - throttles / grants
    if admitted < tonumber(ARGV[7]) then admitted = tonumber(ARGV[7]) end
    if admitted > 1 then admitted = 1 end
    if n > 0 then
      -- A counted window: the vendor's limit is what its window held when
      -- it refused this send (the sends it accepted in the window before
      -- it), unless that is below the cut the share of refusals calls for
      -- (a refusal for another reason than the window) or not below what
      -- the fleet allows (an overload from before a cut).
      local count = math.floor(allowed * admitted)
      if sent > 0 then
        local from = '(' .. string.format('%.0f', sent - window)
        local to = '(' .. string.format('%.0f', sent)
        local held = redis.call('ZCOUNT', KEYS[3], from, to) - redis.call('ZCOUNT', KEYS[4], from, to)
        if held >= count and held < allowed then count = held end
      end
      allowed = math.max(count, math.ceil(tonumber(ARGV[3]) * n), 1)
      redis.call('HSET', KEYS[1], 'count', allowed, 'count_ms', now_ms,
        'decreased_ms', now_ms, 'grants', 0, 'throttles', 0)
    else
      local old = tonumber(redis.call('HGET', KEYS[1], 'ceiling') or '')
      local streak = tonumber(redis.call('HGET', KEYS[1], 'streak') or '0') or 0
      ceiling = math.max(tonumber(ARGV[3]), f * admitted)
      if old and math.abs(ceiling - old) <= 0.1 * old then
        streak = math.min(streak + 1, 5)
      else
        streak = 0
      end
      f = math.max(tonumber(ARGV[3]), ceiling * tonumber(ARGV[5]))
      redis.call('HSET', KEYS[1], 'ceiling', tostring(ceiling), 'floor', tostring(f),
        'decreased_ms', now_ms, 'grants', 0, 'throttles', 0, 'streak', streak)
    end
    cut = pause_ms == 0
    bump = true
  end
end
if paused or cut then
  -- Slots booked before are stale (the generation bump sends them back to
  -- ask again), and pacing restarts from an empty bucket at this moment,
  -- at the new pace: the vendor's bucket just refused, or said its quota
  -- is spent, and refills from now.
  -- After a cut without a pause the schedule restarts one slot from now,
  -- not after every slot booked ahead (the fleet would fall silent for the
  -- booking horizon) and not with a fresh burst.
  -- After a pause, its end lets through what the vendor refilled
  -- meanwhile (a whole burst only after a pause long enough to refill it),
  -- not a whole burst after any pause. A pause cut short by max_pause ends
  -- before the vendor said it would take requests again: one request goes
  -- first and the rest follow at the pace, never a burst into a closed door.
  local ov = redis.call('HMGET', KEYS[5], 'per_second', 'burst')
  local rate = (tonumber(ov[1]) or tonumber(ARGV[13])) * f
  if n > 0 then rate = rate * allowed / n end
  local burst = tonumber(ov[2]) or tonumber(ARGV[14])
  local interval = 1000000 / rate
  local restart = now_us + burst * interval
  if paused and ARGV[15] == '1' then
    local usable = burst > 1 and burst - 1 or burst
    restart = math.max(restart, until_ms * 1000 + (usable - 1) * interval)
  end
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0
  if paused or tat > restart then
    redis.call('HSET', KEYS[1], 'tat', string.format('%.0f', restart))
  end
end
if bump then redis.call('HINCRBY', KEYS[1], 'gen', 1) end
if n > 0 then
  f = f * allowed / n
  ceiling = f
end
return {{math.floor(f * 1000), until_ms, math.floor(ceiling * 1000)}}
"#
    ))
});

/// The adaptive factor at `now_ms`, as the scripts compute it, from the
/// limiter's state hash (for `limits show`); `window` is the counted window
/// (`None` for a token bucket).
pub fn factor_at(
    state: &std::collections::HashMap<String, String>,
    now_ms: i64,
    window: Option<(u64, std::time::Duration)>,
) -> f64 {
    let num = |k: &str| state.get(k).and_then(|v| v.parse::<f64>().ok());
    let counted = match (window, num("count")) {
        (Some((n, window)), Some(count)) if n > 0 => {
            let since = (now_ms as f64 - num("count_ms").unwrap_or(now_ms as f64)).max(0.0);
            let steps = (since / probe_ms(window) as f64).floor().min(30.0);
            ((count + 2f64.powf(steps) - 1.0) / n as f64).min(1.0)
        }
        _ => 1.0,
    };
    let Some(ceiling) = num("ceiling") else {
        return counted;
    };
    let floor = num("floor").unwrap_or(ceiling);
    let cubic = CUBIC / 2f64.powf(num("streak").unwrap_or(0.0));
    let since = (now_ms as f64 - num("decreased_ms").unwrap_or(now_ms as f64)) / 1000.0;
    let k = ((ceiling - floor).max(0.0) / cubic).cbrt();
    let d = since - k;
    (ceiling + cubic * d * d * d).clamp(floor, 1.0) * counted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn state(ceiling: f64, floor: f64, at_ms: i64) -> HashMap<String, String> {
        HashMap::from([
            ("ceiling".to_string(), ceiling.to_string()),
            ("floor".to_string(), floor.to_string()),
            ("decreased_ms".to_string(), at_ms.to_string()),
        ])
    }

    #[test]
    fn the_factor_climbs_back_flattens_at_the_ceiling_then_probes_above_it() {
        let s = state(0.5, 0.45, 0);
        let at = |ms| factor_at(&s, ms, None);
        assert!((at(0) - 0.45).abs() < 1e-9);
        // Quick at first...
        assert!(at(1_000) > 0.48, "{}", at(1_000));
        // ...flat near the ceiling (the vendor's estimated limit)...
        let k_ms = ((0.05 / CUBIC).cbrt() * 1000.0) as i64;
        assert!((at(k_ms) - 0.5).abs() < 1e-3);
        assert!((at(k_ms + 1_000) - 0.5).abs() < 0.02);
        // ...then probing upwards, up to the configured limit.
        assert!(at(k_ms + 5_000) > 0.6);
        assert_eq!(at(k_ms + 60_000), 1.0);
        assert_eq!(factor_at(&HashMap::new(), 5, None), 1.0);
    }

    #[test]
    fn a_learned_window_count_holds_then_probes_one_more_then_faster() {
        let s = HashMap::from([
            ("count".to_string(), "25".to_string()),
            ("count_ms".to_string(), "0".to_string()),
        ]);
        let window = Some((50, std::time::Duration::from_secs(1)));
        let at = |ms| factor_at(&s, ms, window);
        // The vendor's count, for ten windows (10 s at least)...
        assert_eq!(at(0), 0.5);
        assert_eq!(at(9_999), 0.5);
        // ...then one request more per window, then 3, 7, ... more...
        assert_eq!(at(10_000), 26.0 / 50.0);
        assert_eq!(at(20_000), 28.0 / 50.0);
        assert_eq!(at(30_000), 32.0 / 50.0);
        // ...up to the configured limit.
        assert_eq!(at(60_000), 1.0);
        // A token bucket has no window count.
        assert_eq!(factor_at(&s, 0, None), 1.0);
        // Long windows hold their count for ten windows.
        assert_eq!(probe_ms(std::time::Duration::from_secs(30)), 300_000);
    }
}
