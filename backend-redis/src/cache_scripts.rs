//! The Lua scripts of the Redis cache. Each touches the keys of one shard
//! only (one hash slot in a Cluster), so each runs atomically.
//!
//! Lua numbers are doubles, exact only up to 2^53, so no script does
//! arithmetic on a counter's value. A counter's fields are big-endian i64
//! in a string: scripts compare and copy them as bytes, add through
//! `BITFIELD ... OVERFLOW FAIL INCRBY` (exact, and it refuses to overflow),
//! and the one comparison a claim needs ("does `T - F` fit in an i64?") is
//! made on exact 32-bit halves. Slices live in hashes as decimal strings,
//! added with `HINCRBY` and compared on two exact limbs of nine digits.

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

/// Helpers on a counter's string (see the layout): its fields are
/// big-endian i64, compared and copied as bytes; the one comparison a claim
/// needs is made on exact 32-bit halves.
const VALUE: &str = r#"
local LOADED = '\0\0\0\0\0\0\0\1'
-- the fields of a counter's string: state, total, flushed mark (8 bytes
-- each, or nil when the string is not a loaded counter)
local function fields(key)
  local v = redis.call('GETRANGE', key, 0, 31)
  if #v < 24 or string.sub(v, 1, 8) ~= LOADED then return nil end
  return string.sub(v, 9, 16), string.sub(v, 17, 24), string.sub(v, 25, 32)
end
-- 8 bytes as a signed high half and an unsigned low half, both exact
local function halves(b)
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(b, 1, 8)
  local hi = ((b1 * 256 + b2) * 256 + b3) * 256 + b4
  if hi >= 2147483648 then hi = hi - 4294967296 end
  return hi, ((b5 * 256 + b6) * 256 + b7) * 256 + b8
end
-- t - f = h * 2^32 + l with 0 <= l < 2^32; it fits an i64 iff h fits an i32
local function span(t, f)
  local th, tl = halves(t)
  local fh, fl = halves(f)
  local h, l = th - fh, tl - fl
  if l < 0 then h, l = h - 1, l + 4294967296 end
  return h, l
end
-- a non-negative integer below 2^53 (milliseconds) as 8 big-endian bytes
local function bytes_of(n)
  local hi, lo = math.floor(n / 4294967296), n % 4294967296
  return string.char(math.floor(hi / 16777216) % 256, math.floor(hi / 65536) % 256, math.floor(hi / 256) % 256,
    hi % 256, math.floor(lo / 16777216) % 256, math.floor(lo / 65536) % 256, math.floor(lo / 256) % 256, lo % 256)
end
-- a small non-negative i64 (milliseconds) as a number
local function ms_of(b)
  if #b < 8 then return nil end
  local n = 0
  for i = 1, 8 do n = n * 256 + string.byte(b, i) end
  return n
end
-- a counter's member in the named set: `<namespace>/<name>`, the default
-- namespace's too (its display form may lack the slash), so that one
-- namespace's names share one prefix
local function named_member(member)
  local key = string.sub(member, 3)
  if string.find(key, '/', 1, true) then return key end
  return '/' .. key
end
-- marks a cell dirty since `score` unless it is already; a counter also
-- enters the shard's named set. Returns 1 if it was clean.
local function mark(dirty, named, score, member)
  if redis.call('ZADD', dirty, 'NX', score, member) == 0 then return 0 end
  if string.sub(member, 1, 2) == 'c:' then redis.call('ZADD', named, 0, named_member(member)) end
  return 1
end
-- a cell is clean: it leaves both indexes
local function unmark(dirty, named, member)
  redis.call('ZREM', dirty, member)
  if string.sub(member, 1, 2) == 'c:' then redis.call('ZREM', named, named_member(member)) end
end
local function server_ms()
  local t = redis.call('TIME')
  return string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
"#;

/// `register`: the first increment of a lease. KEYS = counter string,
/// dirty set, live set, named set; ARGV = delta, now, member. Adds like the bare
/// `BITFIELD` and records the lease (server time) in the live set.
/// Returns `{'missing'}` (nothing changed), `{'overflow'}` or
/// `{'ok', total and mark (16 bytes)}`.
const REGISTER: &str = r#"
if not fields(KEYS[1]) then return {'missing'} end
local r = redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'FAIL', 'INCRBY', 'i64', '#1', ARGV[1])
if not r[1] then return {'overflow'} end
redis.call('ZADD', KEYS[3], 'GT', server_ms(), ARGV[3])
if ARGV[1] ~= '0' then mark(KEYS[2], KEYS[4], ARGV[2], ARGV[3]) end
return {'ok', redis.call('GETRANGE', KEYS[1], 8, 23)}
"#;

/// `once`: an increment with an idempotency key. KEYS = counter string,
/// dirty set, live set, named set, the key's record; ARGV = delta, now,
/// member, the request's fingerprint, retention in ms. A record found is
/// answered as it is: `{'repeated', record}`, nothing added. Otherwise as
/// `register`, and the record, `<fingerprint> <total as 8 big-endian
/// bytes>` (Lua numbers are doubles: the total stays bytes), is set in the
/// same script: `{'ok', total and mark}`.
const ONCE: &str = r#"
local seen = redis.call('GET', KEYS[5])
if seen then return {'repeated', seen} end
if not fields(KEYS[1]) then return {'missing'} end
local r = redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'FAIL', 'INCRBY', 'i64', '#1', ARGV[1])
if not r[1] then return {'overflow'} end
redis.call('ZADD', KEYS[3], 'GT', server_ms(), ARGV[3])
if ARGV[1] ~= '0' then mark(KEYS[2], KEYS[4], ARGV[2], ARGV[3]) end
redis.call('SET', KEYS[5], ARGV[4] .. ' ' .. redis.call('GETRANGE', KEYS[1], 8, 15), 'PX', ARGV[5])
return {'ok', redis.call('GETRANGE', KEYS[1], 8, 23)}
"#;

/// `undo`: a bare increment found no loaded counter (it added to a lost
/// one's string). KEYS = counter string; ARGV = the steps that take the
/// delta back. If the counter was loaded meanwhile, the delta is in its
/// total: `{'loaded', total and mark}`; else the steps are taken (the
/// string goes if nothing is left in it) and `{'undone'}` returned.
const UNDO: &str = r#"
local t, f = fields(KEYS[1])
if t then return {'loaded', t .. f} end
for i = 1, #ARGV do redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'WRAP', 'INCRBY', 'i64', '#1', ARGV[i]) end
if redis.call('GETRANGE', KEYS[1], 0, 31):find('[^%z]') == nil then redis.call('DEL', KEYS[1]) end
return {'undone'}
"#;

/// `load`: KEYS = counter string, dirty set, live set, named set; ARGV = total,
/// flushed mark, now, member, whether the new counter starts dirty ('1').
/// A loaded counter is left alone. A lost one's string (what was counted
/// since the loss) is folded onto the total. Returns `{'ok', total}` (8
/// bytes) or `{'overflow'}` (nothing changed).
const LOAD: &str = r#"
local t = fields(KEYS[1])
if t then return {'ok', t} end
local since_loss = redis.call('GETRANGE', KEYS[1], 8, 15)
local dirty = ARGV[5] == '1'
if #since_loss == 8 then
  local r = redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'FAIL', 'INCRBY', 'i64', '#1', ARGV[1])
  if not r[1] then return {'overflow'} end
  dirty = dirty or since_loss ~= '\0\0\0\0\0\0\0\0'
else
  redis.call('BITFIELD', KEYS[1], 'SET', 'i64', '#1', ARGV[1])
end
redis.call('BITFIELD', KEYS[1], 'SET', 'i64', '#0', '1', 'SET', 'i64', '#2', ARGV[2], 'SET', 'i64', '#3', ARGV[3])
redis.call('ZADD', KEYS[3], 'GT', server_ms(), ARGV[4])
if dirty then mark(KEYS[2], KEYS[4], ARGV[3], ARGV[4]) end
return {'ok', redis.call('GETRANGE', KEYS[1], 8, 15)}
"#;

/// `set`: KEYS = counter string, dirty set, named set; ARGV = total (8 bytes), now,
/// member. Returns `{'missing'}` or `{'ok', previous total (8 bytes)}`.
const SET: &str = r#"
local t = fields(KEYS[1])
if not t then return {'missing'} end
redis.call('SETRANGE', KEYS[1], 8, ARGV[1])
if t ~= ARGV[1] then mark(KEYS[2], KEYS[3], ARGV[2], ARGV[3]) end
return {'ok', t}
"#;

/// `rebase`: KEYS = counter string; ARGV = the flushed mark expected (8
/// bytes), the shift. Shifts `T` and `F` by it if `F` is still the mark
/// expected. Returns `{'ok'}`, `{'moved'}` (no counter, or another mark) or
/// `{'overflow'}` (nothing changed).
const REBASE: &str = r#"
local t, f = fields(KEYS[1])
if not t or f ~= ARGV[1] then return {'moved'} end
local r = redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'FAIL', 'INCRBY', 'i64', '#1', ARGV[2])
if not r[1] then return {'overflow'} end
r = redis.call('BITFIELD', KEYS[1], 'OVERFLOW', 'FAIL', 'INCRBY', 'i64', '#2', ARGV[2])
if not r[1] then
  redis.call('SETRANGE', KEYS[1], 8, t)
  return {'overflow'}
end
return {'ok'}
"#;

/// `sweep`, one step over a shard's live set: indexes in the dirty set
/// every leased counter with a pending delta (scored by when it was last
/// clean), and ends the leases older than the lease length (of a counter
/// it cannot read, ten lease lengths). KEYS = live
/// set, dirty set, named set; ARGV = ZSCAN cursor, count, lease (ms), the shard's
/// counter string prefix. Returns `{next cursor, cells indexed}`.
const SWEEP: &str = r#"
local now = tonumber(server_ms())
local cutoff = now - tonumber(ARGV[3])
local r = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local items, indexed = r[2], 0
for i = 1, #items, 2 do
  local member = items[i]
  local t, f, clean = fields(ARGV[4] .. string.sub(member, 3))
  if t and t ~= f then
    indexed = indexed + mark(KEYS[2], KEYS[3], ms_of(clean) or now, member)
  end
  -- A counter it could not read (lost, or in a Cluster being migrated: a
  -- script reads keys it did not declare on this node only) keeps its
  -- registration for ten leases.
  local since = tonumber(items[i + 1])
  if since < cutoff and (t or since < now - 10 * tonumber(ARGV[3])) then redis.call('ZREM', KEYS[1], member) end
end
return {r[1], tostring(indexed)}
"#;

/// `index`: the counters of one shard this process added to with bare
/// adds since its last sweep. KEYS = dirty set, named set; ARGV = the shard's counter
/// string prefix, now, then members. Indexes those with a pending delta
/// (scored by when they were last clean). Returns how many it indexed.
const INDEX: &str = r#"
local indexed = 0
for i = 3, #ARGV do
  local t, f, clean = fields(ARGV[1] .. string.sub(ARGV[i], 3))
  if t and t ~= f then
    indexed = indexed + mark(KEYS[1], KEYS[2], ms_of(clean) or tonumber(ARGV[2]), ARGV[i])
  end
end
return indexed
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
/// named set, then one key per cell (a counter's string, a slice's hash); ARGV = batch
/// id, its creation (ms), now, then per cell its field suffix (empty for a
/// counter) and member. A part already recorded under this id (a
/// tombstone left by a recovering flusher) refuses the claim.
/// Returns `{'refused'}` or `{'ok', member, old mark, new mark, ...}`, the
/// marks of a counter as 8 bytes each, of a slice in decimal.
const CLAIM: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {'refused'} end
local out, rec = {'ok'}, {}
local now = bytes_of(tonumber(ARGV[3]))
local function record(member, old, new)
  table.insert(rec, member)
  table.insert(out, member)
  table.insert(out, old)
  table.insert(out, new)
end
for i = 1, #KEYS - 4 do
  local h, sfx, member = KEYS[i + 4], ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local clean = true
  if sfx == '' then
    local t, f = fields(h)
    if t and t ~= f then
      local hi, lo = span(t, f)
      local nf = t
      if hi >= -2147483648 and hi <= 2147483647 then
        -- the common case in one write: F = T, and the clean time
        redis.call('SETRANGE', h, 16, t .. now)
      else
        redis.call('BITFIELD', h, 'INCRBY', 'i64', '#2', hi > 0 and '9223372036854775807' or '-9223372036854775808')
        redis.call('SETRANGE', h, 24, now)
        nf = redis.call('GETRANGE', h, 16, 23)
        clean = false
      end
      record(member, f, nf)
      table.insert(rec, f .. nf)
    end
  else
    local tf, ff = 't' .. sfx, 'f' .. sfx
    local v = redis.call('HMGET', h, tf, ff)
    local t, f = v[1], v[2]
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
      record(member, f, nf)
      table.insert(rec, f .. ' ' .. nf)
    end
    if clean and t and f then redis.call('HDEL', h, tf, ff) end
  end
  if clean then
    unmark(KEYS[3], KEYS[4], member)
  else
    redis.call('ZADD', KEYS[3], ARGV[3], member)
    if sfx == '' then redis.call('ZADD', KEYS[4], 0, named_member(member)) end
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

/// Forgets a counter and its slices. KEYS = counter string, slice hash,
/// dirty set, live set, named set; ARGV = the counter's member, its display form.
const REMOVE: &str = r#"
redis.call('DEL', KEYS[1])
unmark(KEYS[3], KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
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
    pub(crate) register: Script,
    pub(crate) undo: Script,
    pub(crate) once: Script,
    pub(crate) load: Script,
    pub(crate) set: Script,
    pub(crate) rebase: Script,
    pub(crate) sweep: Script,
    pub(crate) index: Script,
    pub(crate) slices: Script,
    pub(crate) claim: Script,
    pub(crate) freeze: Script,
    pub(crate) ack: Script,
    pub(crate) remove: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        let on_values = |body: &str| Script::new(&format!("{VALUE}{body}"));
        Scripts {
            register: on_values(REGISTER),
            undo: on_values(UNDO),
            once: on_values(ONCE),
            load: on_values(LOAD),
            set: on_values(SET),
            rebase: on_values(REBASE),
            sweep: on_values(SWEEP),
            index: on_values(INDEX),
            slices: Script::new(SLICES),
            claim: Script::new(&format!("{LIMBS}{VALUE}{CLAIM}")),
            freeze: Script::new(FREEZE),
            ack: Script::new(ACK),
            remove: on_values(REMOVE),
        }
    }
}
