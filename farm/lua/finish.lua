-- After job.lua, with the moves of one end operation (end_succeeded, end_failed or
-- end_canceled). A: field name ('result', 'error' or ''), its JSON, now, record ttl.
-- Answers the final status, 'missing', or the status the job already had when refused.
local st, tenant = unpack(redis.call('HMGET', JOB, 'status', 'tenant'))
if not st then return 'missing' end
local to = MOVES[st]
if not to then return st end
if A[1] ~= '' then redis.call('HSET', JOB, A[1], A[2]) end
finish(tenant, st, to, A[3], tonumber(A[4]))
return to
