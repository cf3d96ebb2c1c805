//! The Lua scripts of [`RedisStore`](super::RedisStore). Each runs
//! atomically on the server; none does arithmetic on a counter value (Lua
//! numbers are doubles): values only ever change through `HINCRBY`, are read
//! back as strings with `HGET`, and are restored from those strings.

use std::sync::LazyLock;

use redis::Script;

/// Status codes the scripts reply with, as the first element of an array.
pub(crate) mod status {
    /// The batch was applied now.
    pub(crate) const APPLIED: i64 = 0;
    /// The marker of the batch or of a batch of its lineage exists: nothing
    /// was changed.
    pub(crate) const ALREADY_APPLIED: i64 = 1;
    /// Entry `i` (1-based, second element) would overflow; nothing was changed.
    pub(crate) const OVERFLOW: i64 = 2;
    /// Entry `i` hit a value that is not an integer (third element: Redis's
    /// message); nothing was changed.
    pub(crate) const NOT_INTEGER: i64 = 3;
    /// Entry `i` (or the counter, for delete) names a Redis key (third
    /// element) holding another data type; nothing was changed.
    pub(crate) const WRONG_TYPE: i64 = 4;
    /// The batch's split marker exists (a part of it was applied): nothing
    /// was changed.
    pub(crate) const SPLIT: i64 = 5;
}

/// Applies a batch once, following the split contract of
/// [`DurableStore::apply`](counter_core::DurableStore::apply).
///
/// - `KEYS[1]`: the batch marker. Then, with `L` the length of the batch's
///   lineage: the `L` markers of its lineage (guards), the marker of its own
///   split marker, and the `L` markers of the split markers of its lineage
///   (to create). Then three keys per entry: for a counter its values hash,
///   names set and top set; for a time slice its `count:` hash, its series
///   set and the `known:` set.
/// - `ARGV[1]`: the markers' lifetime in seconds, `ARGV[2]`: `L`. Then five
///   per entry: kind (`c` or `s`), hash field (name or bucket start), delta
///   (decimal), the `known:` member (slices) and the precision (slices).
///
/// Order: marker checks (the batch's and its lineage's: `{1}`; then its
/// split marker: `{5}`); type checks of every key (so that nothing below
/// can fail half-way); every `HINCRBY` through `redis.pcall`, remembering
/// the field's previous string, undone in reverse order from those strings
/// on the first failure (overflow leaves the failing field unchanged by
/// itself); then the index updates (names, top score from the new value's
/// string, `known:`, series set) and the markers (the batch's and the split
/// markers of its lineage) with their expiry.
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local L = tonumber(ARGV[2])
for k = 1, L + 1 do
  if redis.call('EXISTS', KEYS[k]) == 1 then
    return {1}
  end
end
if redis.call('EXISTS', KEYS[L + 2]) == 1 then
  return {5}
end
local o = 2 * L + 2
local n = (#KEYS - o) / 3
local function hk(i) return KEYS[o + 3 * i - 2] end
local function kind(i) return ARGV[5 * i - 2] end
local function field(i) return ARGV[5 * i - 1] end
local want = {}
for i = 1, n do
  if kind(i) == 'c' then
    want[o + 3 * i - 2], want[o + 3 * i - 1], want[o + 3 * i] = 'hash', 'zset', 'zset'
  else
    want[o + 3 * i - 2], want[o + 3 * i - 1], want[o + 3 * i] = 'hash', 'set', 'zset'
  end
end
for k = o + 1, #KEYS do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'none' and t ~= want[k] then
    return {4, math.floor((k - o + 2) / 3), KEYS[k]}
  end
end
local old = {}
local function undo(upto)
  for j = upto, 1, -1 do
    if old[j] == false then
      redis.call('HDEL', hk(j), field(j))
    else
      redis.call('HSET', hk(j), field(j), old[j])
    end
  end
end
for i = 1, n do
  local h, f = hk(i), field(i)
  local prev = redis.call('HGET', h, f)
  local r = redis.pcall('HINCRBY', h, f, ARGV[5 * i])
  if type(r) == 'table' and r['err'] then
    undo(i - 1)
    if string.find(r['err'], 'overflow', 1, true) then
      return {2, i}
    end
    return {3, i, r['err']}
  end
  old[i] = prev
end
for i = 1, n do
  local f = field(i)
  if kind(i) == 'c' then
    redis.call('ZADD', KEYS[o + 3 * i - 1], 0, f)
    redis.call('ZADD', KEYS[o + 3 * i], redis.call('HGET', hk(i), f), f)
  else
    redis.call('SADD', KEYS[o + 3 * i - 1], ARGV[5 * i + 2])
    redis.call('ZADD', KEYS[o + 3 * i], 0, ARGV[5 * i + 1])
  end
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
for k = L + 3, o do
  redis.call('SET', KEYS[k], '1', 'EX', ARGV[1])
end
return {0}
"#,
    )
});

/// Deletes a counter and its time series.
///
/// - `KEYS`: values hash, names set, top set, series set, `known:`.
/// - `ARGV`: name, key text (`key.to_string()`), the `count:` key prefix
///   (with the store's prefix).
///
/// The `count:` hashes are found through the series set, inside the script,
/// so a writer adding a precision concurrently cannot leave one behind
/// (standalone Redis only: those keys are not declared in `KEYS`).
/// Replies `{0, n}` with `n` the number of things deleted.
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local want = {'hash', 'zset', 'zset', 'set', 'zset'}
for k = 1, 5 do
  local t = redis.call('TYPE', KEYS[k])['ok']
  if t ~= 'none' and t ~= want[k] then
    return {4, 0, KEYS[k]}
  end
end
local existed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
for _, p in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  local member = p .. ':' .. ARGV[2]
  local hash = ARGV[3] .. member
  if redis.call('TYPE', hash)['ok'] == 'hash' then
    existed = existed + redis.call('DEL', hash)
  end
  redis.call('ZREM', KEYS[5], member)
end
redis.call('DEL', KEYS[4])
return {0, existed}
"#,
    )
});

/// Cleans some series of one precision: deletes their buckets starting
/// before the cutoff and, when a series' hash is left empty (or was
/// already), removes its `known:` member and its precision from the
/// counter's series set, in the same atomic step, so a concurrent writer
/// (whose own script adds the bucket and the `known:` member together)
/// either lands before (the hash is not empty: the series stays known) or
/// after (it adds the member back).
///
/// Bucket starts are compared exactly as decimal strings, never as Lua
/// numbers; fields that are not canonical decimal integers are left alone,
/// and so are `count:` keys holding another data type.
///
/// - `KEYS[1]`: `known:`. Then two per series: its `count:` hash and its
///   series set.
/// - `ARGV[1]`: cutoff (decimal), `ARGV[2]`: precision (decimal). Then one
///   per series: its `known:` member.
///
/// Replies `{buckets removed, series removed}`.
pub(crate) static CLEAN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local function is_int(s)
  return s == '0' or string.find(s, '^%-?[1-9]%d*$') ~= nil
end
local function lt(a, b)
  local an, bn = string.byte(a, 1) == 45, string.byte(b, 1) == 45
  if an ~= bn then
    return an
  end
  if #a ~= #b then
    if an then
      return #a > #b
    end
    return #a < #b
  end
  for k = 1, #a do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then
      if an then
        return x > y
      end
      return x < y
    end
  end
  return false
end
local cutoff = ARGV[1]
local buckets, series = 0, 0
for i = 1, (#KEYS - 1) / 2 do
  local h, s, m = KEYS[2 * i], KEYS[2 * i + 1], ARGV[2 + i]
  local t = redis.call('TYPE', h)['ok']
  if t == 'hash' then
    local old = {}
    for _, f in ipairs(redis.call('HKEYS', h)) do
      if is_int(f) and lt(f, cutoff) then
        old[#old + 1] = f
      end
    end
    for j = 1, #old, 1000 do
      buckets = buckets + redis.call('HDEL', h, unpack(old, j, math.min(j + 999, #old)))
    end
  end
  if redis.call('EXISTS', h) == 0 then
    series = series + redis.call('ZREM', KEYS[1], m)
    if redis.call('TYPE', s)['ok'] == 'set' then
      redis.call('SREM', s, ARGV[2])
    end
  end
end
return {buckets, series}
"#,
    )
});
