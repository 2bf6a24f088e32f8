-- Deletes an ended job's record and its events.
-- KEYS[1] the job's record, KEYS[2] its event stream, KEYS[3] the tenant's job index.
-- ARGV: id, tenant, the purge moves (moves.lua: only ended jobs may go).
-- Answers 'purged', 'missing' (none, or another tenant's) or 'active:<status>'.
local id, tenant = ARGV[1], ARGV[2]
local st, owner = unpack(redis.call('HMGET', KEYS[1], 'status', 'tenant'))
if not st or owner ~= tenant then return 'missing' end
if not moves(ARGV[3])[st] then return 'active:'..st end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], id)
return 'purged'
