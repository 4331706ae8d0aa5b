"""pointseg.lru.ByteLRU: bounded by bytes and count, least recently used first, the newest always kept."""
from pointseg.lru import ByteLRU


def test_evicts_least_recently_used_by_bytes_and_count():
    c = ByteLRU(10, size=len, max_items=3)
    c.put("a", b"1234")
    c.put("b", b"1234")
    assert c.get("a") == b"1234"          # a is now the most recent
    c.put("c", b"1234")                   # 12 bytes > 10: b (least recent) goes
    assert "b" not in c and "a" in c and "c" in c and c.nbytes == 8
    c.put("d", b"1")
    c.put("e", b"1")                      # four items > 3: a goes
    assert list(c.keys()) == ["c", "d", "e"]
    c.put("huge", b"x" * 50)              # alone over the budget, but the newest is kept
    assert list(c.keys()) == ["huge"] and c.hits == 1


def test_discard_where_and_pop_keep_the_byte_count():
    c = ByteLRU(100, size=len)
    for k in range(4):
        c.put((k % 2, k), b"xx")
    c.discard_where(lambda key: key[0] == 0)
    assert sorted(c.keys()) == [(1, 1), (1, 3)] and c.nbytes == 4
    assert c.pop((1, 1)) == b"xx" and c.nbytes == 2 and c.pop("nope") is None


def test_put_if_room_never_pushes_anything_out():
    cache = ByteLRU(max_bytes=10, size=len)
    cache.put("a", b"12345")
    assert cache.put_if_room("b", b"1234") and "b" in cache        # fits beside "a"
    assert not cache.put_if_room("c", b"12") and "c" not in cache   # would exceed 10 bytes
    assert "a" in cache and cache.nbytes == 9
    assert not cache.put_if_room("a", b"1")                         # present already: left as it is
    assert cache.get("a") == b"12345"
