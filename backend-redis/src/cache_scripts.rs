//! The Lua scripts of the Redis cache. Each touches the keys of one shard
//! only (one hash slot in a Cluster), so each runs atomically.
//!
//! Lua numbers are doubles, exact only up to 2^53, so no script does
//! arithmetic on a counter's value: additions go through `HINCRBY` (exact,
//! and it refuses to overflow), values travel as decimal strings, and the
//! one comparison a claim needs ("does `T - F` fit in an i64?") is done on
//! two exact limbs of nine digits.

use redis::Script;

/// Exact helpers on decimal i64 strings.
const LIMBS: &str = r#"
local function limbs(s)
  local neg = string.sub(s, 1, 1) == '-'
  local digits = neg and string.sub(s, 2) or s
  local n = #digits
  local hi, lo = 0, tonumber(digits)
  if n > 9 then
    hi = tonumber(string.sub(digits, 1, n - 9))
    lo = tonumber(string.sub(digits, n - 8))
  end
  if neg then return -hi, -lo end
  return hi, lo
end
-- t - f as hi * 1e9 + lo, with lo of the same sign as hi
local function diff(t, f)
  local th, tl = limbs(t)
  local fh, fl = limbs(f)
  local h, l = th - fh, tl - fl
  if l >= 1e9 then h, l = h + 1, l - 1e9 elseif l <= -1e9 then h, l = h - 1, l + 1e9 end
  if h > 0 and l < 0 then h, l = h - 1, l + 1e9 elseif h < 0 and l > 0 then h, l = h + 1, l - 1e9 end
  return h, l
end
local function fits(h, l)
  if h > 9223372036 or h < -9223372036 then return false end
  if h == 9223372036 then return l <= 854775807 end
  if h == -9223372036 then return l >= -854775808 end
  return true
end
"#;

/// `incr`: KEYS = counter hash, dirty set; ARGV = delta, now, member.
/// Returns `{'missing'}`, `{'overflow'}` or `{'ok', total, flushed}`.
const INCR: &str = r#"
local v = redis.call('HMGET', KEYS[1], 't', 'f')
if not v[1] or not v[2] then
  if v[1] or v[2] then redis.call('HDEL', KEYS[1], 't', 'f') end
  redis.call('ZREM', KEYS[2], ARGV[3])
  return {'missing'}
end
if ARGV[1] ~= '0' then
  local r = redis.pcall('HINCRBY', KEYS[1], 't', ARGV[1])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'overflow', 1, true) then return {'overflow'} end
    return r
  end
  redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3])
end
return {'ok', redis.call('HGET', KEYS[1], 't'), v[2]}
"#;

/// `load`: KEYS = counter hash, dirty set; ARGV = total, flushed mark, now,
/// member, whether the new counter starts dirty ('1'). Returns the total.
const LOAD: &str = r#"
local v = redis.call('HMGET', KEYS[1], 't', 'f')
if v[1] and v[2] then return v[1] end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'f', ARGV[2])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[4]) end
return ARGV[1]
"#;

/// `set`: KEYS = counter hash, dirty set; ARGV = total, now, member.
/// Returns `{'missing'}` or `{'ok', previous total}`.
const SET: &str = r#"
local v = redis.call('HMGET', KEYS[1], 't', 'f')
if not v[1] or not v[2] then return {'missing'} end
redis.call('HSET', KEYS[1], 't', ARGV[1])
if v[1] ~= ARGV[1] then redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[3]) end
return {'ok', v[1]}
"#;

/// `rebase`: KEYS = counter hash; ARGV = the flushed mark expected, the
/// shift. Shifts `t` and `f` by it if `f` is still the mark expected.
/// Returns `{'ok'}`, `{'moved'}` (no counter, or another mark) or
/// `{'overflow'}` (nothing changed; `t` is restored from its string).
const REBASE: &str = r#"
local v = redis.call('HMGET', KEYS[1], 't', 'f')
if not v[1] or not v[2] or v[2] ~= ARGV[1] then return {'moved'} end
local r = redis.pcall('HINCRBY', KEYS[1], 't', ARGV[2])
if type(r) == 'table' and r.err then return {'overflow'} end
r = redis.pcall('HINCRBY', KEYS[1], 'f', ARGV[2])
if type(r) == 'table' and r.err then
  redis.call('HSET', KEYS[1], 't', v[1])
  return {'overflow'}
end
return {'ok'}
"#;

/// `incr_slices` for the slices of one shard, all or nothing: KEYS = dirty
/// set, then one slice hash per slice; ARGV = delta, now, the number `u` of
/// undo steps, `u` undo amounts, then per slice its field suffix and member.
/// Returns `{'ok'}` or `{'overflow', index}`.
const SLICES: &str = r#"
local u = tonumber(ARGV[3])
local base = 3 + u
for i = 1, #KEYS - 1 do
  local h, sfx, member = KEYS[i + 1], ARGV[base + 2 * i - 1], ARGV[base + 2 * i]
  local r = redis.pcall('HINCRBY', h, 't' .. sfx, ARGV[1])
  if type(r) == 'table' and r.err then
    for j = 1, i - 1 do
      for k = 1, u do redis.call('HINCRBY', KEYS[j + 1], 't' .. ARGV[base + 2 * j - 1], ARGV[3 + k]) end
    end
    if string.find(r.err, 'overflow', 1, true) then return {'overflow', tostring(i)} end
    return r
  end
  redis.call('HSETNX', h, 'f' .. sfx, '0')
  redis.call('ZADD', KEYS[1], 'NX', ARGV[2], member)
end
return {'ok'}
"#;

/// `claim`, one shard's part: KEYS = part record, claims index, dirty set,
/// then one hash per cell; ARGV = batch id, its creation (ms), now, then per
/// cell its field suffix and member. A part already recorded under this id
/// (a tombstone left by a recovering flusher) refuses the claim.
/// Returns `{'refused'}` or `{'ok', member, old mark, new mark, ...}`.
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'refused'} end
local out, rec = {'ok'}, {}
for i = 1, #KEYS - 3 do
  local h, sfx, member = KEYS[i + 3], ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local tf, ff = 't' .. sfx, 'f' .. sfx
  local v = redis.call('HMGET', h, tf, ff)
  local t, f = v[1], v[2]
  local clean = true
  if t and f and t ~= f then
    local hi, lo = diff(t, f)
    local nf = t
    if fits(hi, lo) then
      redis.call('HSET', h, ff, t)
    else
      redis.call('HINCRBY', h, ff, hi > 0 and '9223372036854775807' or '-9223372036854775808')
      nf = redis.call('HGET', h, ff)
      clean = false
    end
    table.insert(rec, member)
    table.insert(rec, f .. ' ' .. nf)
    table.insert(out, member)
    table.insert(out, f)
    table.insert(out, nf)
  end
  if clean then
    redis.call('ZREM', KEYS[3], member)
    if sfx ~= '' and t and f then redis.call('HDEL', h, tf, ff) end
  else
    redis.call('ZADD', KEYS[3], ARGV[3], member)
  end
end
if #rec > 0 then
  redis.call('HSET', KEYS[1], unpack(rec))
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
end
return out
"#;

/// Freezes one shard's part of a claim before anyone but its maker applies
/// it: returns the part (`{member, "old new", ...}`), or leaves a tombstone
/// so that the maker can no longer add a part here. KEYS = part record;
/// ARGV = tombstone lifetime (ms).
const FREEZE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HEXISTS', KEYS[1], '~void') == 1 then return {} end
  return redis.call('HGETALL', KEYS[1])
end
redis.call('HSET', KEYS[1], '~void', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {}
"#;

/// Forgets one shard's part of an applied claim (tombstones stay until
/// they expire). KEYS = part record, claims index; ARGV = batch id.
const ACK: &str = r#"
if redis.call('HEXISTS', KEYS[1], '~void') == 0 then redis.call('DEL', KEYS[1]) end
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

/// Forgets a counter and its slices. KEYS = counter hash, slice hash, dirty
/// set; ARGV = the counter's member, its display form.
const REMOVE: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(f, 1, 2) == 't:' then
    redis.call('ZREM', KEYS[3], 's' .. string.sub(f, 2) .. ':' .. ARGV[2])
  end
end
redis.call('DEL', KEYS[2])
return 1
"#;

/// The cache's scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) incr: Script,
    pub(crate) load: Script,
    pub(crate) set: Script,
    pub(crate) rebase: Script,
    pub(crate) slices: Script,
    pub(crate) claim: Script,
    pub(crate) freeze: Script,
    pub(crate) ack: Script,
    pub(crate) remove: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            incr: Script::new(INCR),
            load: Script::new(LOAD),
            set: Script::new(SET),
            rebase: Script::new(REBASE),
            slices: Script::new(SLICES),
            claim: Script::new(&format!("{LIMBS}{CLAIM}")),
            freeze: Script::new(FREEZE),
            ack: Script::new(ACK),
            remove: Script::new(REMOVE),
        }
    }
}
