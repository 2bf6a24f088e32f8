"""The farm's shared state, used by the API and the workers alike: job records in Redis,
object storage, the broker's settings and the API keys file. No torch, no Flask here."""
