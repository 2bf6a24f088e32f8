-- After server_now.lua. Renews an event stream's slot lease (api/streams.py).
-- KEYS[1] the tenant's open streams. ARGV: lease ms, slot. Answers 1, or 0 when it ran out.
-- A lease that ran out (Redis unreachable, or a client that stopped reading so long that no
-- chunk passed) is not taken back: its slot may be another stream's by now, and the cap holds.
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not expiry or tonumber(expiry) < now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
