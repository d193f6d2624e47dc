-- mutate: the one script that changes a zone (see zones.go).
-- Validates the whole change against the zone as it is, and only then writes
-- it, bumps the version and the SOA serial and publishes the change event, so
-- a refused change writes nothing.
--
-- KEYS: 1 zone hash, 2 records hash (id -> "owner\ttype\tttl\tdata"),
--       3 owner index (owner -> "id id ...")
-- ARGV: 1 expected version ("0" = any), 2 serial floor (YYYYMMDD00),
--       3 event channel, 4 zone name, 5 ops (JSON array),
--       6 creation (JSON {"account","created","gen"}, or "" to change an existing zone),
--       7 most records a zone may hold, 8 most records at one owner name
-- Returns {serial, version, new ids...}; errors are "MXERR kind field message".
local kz, kr, ko = KEYS[1], KEYS[2], KEYS[3]
local zone = ARGV[4]

local function fail(kind, field, msg)
  return redis.error_reply('MXERR ' .. kind .. ' ' .. field .. ' ' .. msg)
end

local exists = redis.call('EXISTS', kz) == 1
local create = nil
if ARGV[6] ~= '' then
  if exists then return fail('exists', 'name', 'zone ' .. zone .. ' already exists') end
  create = cjson.decode(ARGV[6])
elseif not exists then
  return fail('notfound', 'zone', 'zone ' .. zone .. ' does not exist')
end

local ver, serial, nextid, gen = 0, 0, 0, ''
if create then
  gen = create.gen
else
  local h = redis.call('HMGET', kz, 'ver', 'serial', 'nextid', 'gen')
  ver, serial, nextid, gen = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]), h[4]
end
local want = tonumber(ARGV[1])
if want ~= 0 and want ~= ver then
  return fail('conflict', 'zone', 'zone ' .. zone .. ' is at version ' .. ver .. ', not ' .. want)
end

local function split(v)
  local owner, typ, _, data = string.match(v, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$')
  return owner, typ, data
end

local owners = {}   -- owner -> {id -> {t = type, d = data}}, loaded lazily
local writes = {}   -- id -> encoded record, or false to delete
local order = {}    -- ids in first-write order
local function load(owner)
  local set = owners[owner]
  if set then return set end
  set = {}
  local ids = redis.call('HGET', ko, owner)
  if ids then
    for id in string.gmatch(ids, '%S+') do
      local v = redis.call('HGET', kr, id)
      if v then
        local _, t, d = split(v)
        set[id] = {t = t, d = d}
      end
    end
  end
  owners[owner] = set
  return set
end
local function current(id)
  local w = writes[id]
  if w ~= nil then
    if w == false then return nil end
    return w
  end
  return redis.call('HGET', kr, id)
end
local function write(id, v)
  if writes[id] == nil then table.insert(order, id) end
  writes[id] = v
end
local function count(set, typ)
  local n = 0
  for _, rec in pairs(set) do
    if typ == nil or rec.t == typ then n = n + 1 end
  end
  return n
end
local function duplicate(set, typ, data, except)
  for id, rec in pairs(set) do
    if id ~= except and rec.t == typ and rec.d == data then return id end
  end
  return nil
end

local nsBefore = count(load('@'), 'NS')
local soa = nil
local added = {}
local ops = cjson.decode(ARGV[5])
for _, op in ipairs(ops) do
  if op.op == 'add' or op.op == 'put' then
    local value = op.n .. '\t' .. op.t .. '\t' .. op.l .. '\t' .. op.d
    local id = op.id
    if op.op == 'put' then
      local old = current(id)
      if not old then return fail('notfound', 'id', 'record ' .. id .. ' does not exist') end
      load(split(old))[id] = nil
    end
    local set = load(op.n)
    local dup = duplicate(set, op.t, op.d, id)
    if dup then
      if not op.quiet then
        return fail('exists', 'data', 'an identical ' .. op.t .. ' record exists at ' .. op.n .. ' (id ' .. dup .. ')')
      end
    else
      if op.op == 'add' then
        nextid = nextid + 1
        id = tostring(nextid)
        table.insert(added, id)
      end
      set[id] = {t = op.t, d = op.d}
      write(id, value)
    end
  elseif op.op == 'del' then
    local old = current(op.id)
    if old then
      load(split(old))[op.id] = nil
      write(op.id, false)
    elseif not op.quiet then
      return fail('notfound', 'id', 'record ' .. op.id .. ' does not exist')
    end
  elseif op.op == 'clear' then
    for _, id in ipairs(redis.call('HKEYS', kr)) do
      if writes[id] == nil then write(id, false) end
    end
    for id, v in pairs(writes) do
      if v then writes[id] = false end
    end
    for _, owner in ipairs(redis.call('HKEYS', ko)) do owners[owner] = {} end
    for owner in pairs(owners) do owners[owner] = {} end
  elseif op.op == 'soa' then
    soa = op
  else
    return fail('invalid', 'op', 'unknown operation ' .. tostring(op.op))
  end
end

for owner, set in pairs(owners) do
  if count(set, 'CNAME') > 0 and count(set, nil) > 1 then
    return fail('invalid', 'type', 'a CNAME cannot coexist with other records at ' .. owner)
  end
end
local maxOwner = tonumber(ARGV[8])
for owner, set in pairs(owners) do
  if count(set, nil) > maxOwner then
    return fail('invalid', 'name', 'more than ' .. maxOwner .. ' records at ' .. owner)
  end
end
local total = redis.call('HLEN', kr)
for _, id in ipairs(order) do
  local stored = redis.call('HEXISTS', kr, id) == 1
  if writes[id] and not stored then total = total + 1 end
  if not writes[id] and stored then total = total - 1 end
end
if total > tonumber(ARGV[7]) then
  return fail('invalid', 'zone', 'a zone holds at most ' .. ARGV[7] .. ' records')
end
if nsBefore > 0 and count(owners['@'], 'NS') == 0 then
  return fail('invalid', 'type', 'the last NS record of the apex cannot be removed')
end

-- A change that changes nothing (only quiet no-ops) keeps serial and
-- version, and publishes nothing (RFC 2136 3.7: no serial bump).
if #order == 0 and not soa and not create then
  return {string.format('%d', serial), string.format('%d', ver)}
end

-- Validated: write.
for _, id in ipairs(order) do
  if writes[id] then redis.call('HSET', kr, id, writes[id]) else redis.call('HDEL', kr, id) end
end
for owner, set in pairs(owners) do
  local ids = {}
  for id in pairs(set) do table.insert(ids, id) end
  if #ids == 0 then
    redis.call('HDEL', ko, owner)
  else
    table.sort(ids)
    redis.call('HSET', ko, owner, table.concat(ids, ' '))
  end
end
ver = ver + 1
local floor = tonumber(ARGV[2])
serial = serial + 1
if serial < floor then serial = floor end
if soa then
  if soa.serial and soa.serial > serial then serial = soa.serial end
  redis.call('HSET', kz, 'mname', soa.mname, 'rname', soa.rname, 'refresh', soa.refresh,
    'retry', soa.retry, 'expire', soa.expire, 'minimum', soa.minimum, 'ttl', soa.ttl)
end
if serial > 4294967295 then serial = serial - 4294967296 end
if create then
  redis.call('HSET', kz, 'account', create.account, 'created', create.created, 'gen', gen)
end
local sserial = string.format('%d', serial)
local sver = string.format('%d', ver)
redis.call('HSET', kz, 'ver', sver, 'serial', sserial, 'nextid', string.format('%d', nextid))
redis.call('PUBLISH', ARGV[3], 'Z ' .. zone .. ' ' .. sver .. ' ' .. sserial .. ' ' .. gen)
local out = {sserial, sver}
for _, id in ipairs(added) do table.insert(out, id) end
return out
