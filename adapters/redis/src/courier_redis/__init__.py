"""redis transport for courier; see docs/transports/redis.md."""
