-- Undoes a create whose dispatch failed: nothing half-queued is left.
-- KEYS[1] the tenant's job index, KEYS[2] the tenant's queued set, KEYS[3] the set of queued
--   jobs, then for job i (1 to n) KEYS[2 + 2i] its record and KEYS[3 + 2i] its event stream.
-- ARGV: the n job ids. Answers n.
for i = 1, #ARGV do
  local id = ARGV[i]
  redis.call('DEL', KEYS[2 + 2 * i], KEYS[3 + 2 * i])
  redis.call('ZREM', KEYS[1], id)
  redis.call('SREM', KEYS[2], id)
  redis.call('SREM', KEYS[3], id)
end
return #ARGV
