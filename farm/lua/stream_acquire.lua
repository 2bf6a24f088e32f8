-- After server_now.lua. Takes one of a tenant's event-stream slots (api/streams.py).
-- KEYS[1] the tenant's open streams (slot id -> lease expiry, ms). ARGV: cap, lease ms, slot.
-- Answers 1, or 0 when all the tenant's slots are taken.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
