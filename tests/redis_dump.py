"""Read back what a test left in Redis, to assert that no secret was ever written there."""

from __future__ import annotations


def redis_text(client, key) -> bytes:
    """Everything stored under ``key``, read by type (DUMP may compress a value)."""
    kind = client.type(key)
    read = {b"string": client.get, b"hash": client.hgetall, b"list": lambda k: client.lrange(k, 0, -1),
            b"set": client.smembers, b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            b"stream": client.xrange}[kind]
    return repr(read(key)).encode()
