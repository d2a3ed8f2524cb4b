"""Redis Streams transport for courier (single node and Redis Cluster), on redis-py.

``pip install "courier-bus[redis]"`` installs it; ``redis://``, ``rediss://``,
``redis+unix://``, ``redis+cluster://`` and ``rediss+cluster://`` DSNs then
open a :class:`RedisTransport`. See docs/transports/redis.md.
"""

from courier_redis.options import RedisOptions
from courier_redis.transport import RedisTransport

__all__ = ["RedisOptions", "RedisTransport"]
